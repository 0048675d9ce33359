"""Editing a model's main graph: fresh names, node insertion, clean-up and topological order.

Everything here is subgraph-aware: a tensor or initializer read inside an If/Loop/Scan body
counts as used (clean-up never deletes what a branch reads), a node holding a body comes after
the producers of what the body reads, and new names avoid the names of every scope.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import onnx

from quantkit.errors import InputError
from quantkit.graph.scope import all_names, node_reads, outer_reads, subgraphs


class UniqueNames:
    """Hands out names not yet used in a graph (``base``, ``base_1``, ``base_2``...).

    Args:
        taken: names already in use (the set is updated as names are handed out).
    """

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    @classmethod
    def for_model(cls, model: onnx.ModelProto) -> UniqueNames:
        """Names unused by any node or tensor of ``model``, in every scope."""
        return cls(all_names(model.graph))

    def __call__(self, base: str) -> str:
        """A fresh name derived from ``base`` (and reserve it)."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


def read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor the nodes of ``graph`` read (inputs and subgraph reads) or it outputs."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(n for n in node.input if n)
        for g in subgraphs(node):
            used.update(outer_reads(g))
    return used


def remove_unused_initializers(model: onnx.ModelProto) -> set[str]:
    """Drop initializers that no node, subgraph or graph output reads (and their graph inputs).

    Returns:
        The names dropped.
    """
    g = model.graph
    used = read_names(g)
    dropped = {t.name for t in g.initializer if t.name not in used}
    if not dropped:
        return dropped
    keep = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(keep)
    inputs = [i for i in g.input if i.name not in dropped]
    del g.input[:]
    g.input.extend(inputs)
    return dropped


def remove_unused_nodes(model: onnx.ModelProto) -> list[str]:
    """Drop main-graph nodes none of whose outputs is read (repeated until none is left).

    Reads inside subgraphs and graph outputs count. Nodes without outputs are kept.

    Returns:
        The names of the nodes dropped, in graph order of each sweep.
    """
    g = model.graph
    dropped: list[str] = []
    while True:
        used = read_names(g)
        dead = [i for i, n in enumerate(g.node)
                if n.output and not any(o and o in used for o in n.output)]
        if not dead:
            return dropped
        dead_set = set(dead)
        dropped.extend(g.node[i].name for i in dead)
        keep = [n for i, n in enumerate(g.node) if i not in dead_set]
        del g.node[:]
        g.node.extend(keep)


def toposort(model: onnx.ModelProto) -> bool:
    """Put the main graph's nodes in topological order (in place), as stable as possible.

    A node comes after the producers of its inputs and of every outer tensor its subgraphs
    read; among nodes that are ready, the earlier one in the current order goes first, so a
    sorted graph is left unchanged.

    Returns:
        Whether the order changed.

    Raises:
        InputError: the graph has a cycle (the message names nodes on it).
    """
    g = model.graph
    nodes = list(g.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        deps = {producer[n] for n in node_reads(node) if n in producer and producer[n] != i}
        waiting[i] = len(deps)
        for d in deps:
            readers.setdefault(d, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for r in readers.get(i, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) < len(nodes):
        stuck = [nodes[i].name or f"{nodes[i].op_type}_{i}" for i, w in enumerate(waiting) if w]
        raise InputError(f"the graph has a cycle through {', '.join(stuck[:5])}"
                         f"{' ...' if len(stuck) > 5 else ''}: ONNX graphs must be acyclic. "
                         "Re-export the model.")
    if order == list(range(len(nodes))):
        return False
    del g.node[:]
    g.node.extend(nodes[i] for i in order)
    return True


class GraphEditor:
    """Collects nodes to insert into a main graph, then inserts them in one pass.

    Positions refer to the graph as it was when the editor was made; nodes inserted at one
    position keep the order they were given in.

    Args:
        model: the model to edit (in place, on :meth:`commit`).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self._count = len(model.graph.node)
        self._position: dict[str, int] = {}
        for i, n in enumerate(model.graph.node):
            if n.name:
                self._position.setdefault(str(n.name), i)
        self._before: dict[int, list[onnx.NodeProto]] = {}

    def _index(self, node: str | int) -> int:
        if isinstance(node, int):
            return node
        if node not in self._position:
            raise KeyError(f"no node named {node!r}")
        return self._position[node]

    def insert_before(self, node: str | int, new: Iterable[onnx.NodeProto]) -> None:
        """Insert ``new`` right before a node (name or position; ``len(nodes)`` = the end)."""
        self._before.setdefault(self._index(node), []).extend(new)

    def insert_after(self, node: str | int, new: Iterable[onnx.NodeProto]) -> None:
        """Insert ``new`` right after a node (name or position)."""
        self.insert_before(self._index(node) + 1, new)

    def append(self, new: Iterable[onnx.NodeProto]) -> None:
        """Insert ``new`` at the end of the graph."""
        self.insert_before(self._count, new)

    def commit(self) -> None:
        """Rebuild the graph's node list with the insertions."""
        if not self._before:
            return
        g = self.model.graph
        nodes = list(g.node)
        del g.node[:]
        for i, node in enumerate(nodes):
            g.node.extend(self._before.get(i, []))
            g.node.append(node)
        g.node.extend(self._before.get(len(nodes), []))
        self._before = {}


__all__ = ["GraphEditor", "UniqueNames", "read_names", "remove_unused_initializers",
           "remove_unused_nodes", "toposort"]
