"""Subgraphs (If / Loop / Scan bodies) and the names they read from enclosing scopes.

An ONNX node may hold graphs in attributes (``then_branch``/``else_branch`` of If, ``body`` of
Loop and Scan). A body can read any tensor of an enclosing graph by name -- an initializer, a
graph input or a node output -- without listing it as an input. Every pass that counts readers
(unused-initializer removal, "is this tensor read by one node only", topological order) must
see those reads, or it deletes or rewrites a tensor a branch still needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx

_GRAPH = onnx.AttributeProto.GRAPH
_GRAPHS = onnx.AttributeProto.GRAPHS


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in a node's attributes (empty for ordinary nodes)."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == _GRAPH:
            out.append(a.g)
        elif a.type == _GRAPHS:
            out.extend(a.graphs)
    return out


def has_subgraph(node: onnx.NodeProto) -> bool:
    """Whether a node holds a graph attribute (If, Loop, Scan...)."""
    return any(a.type in (_GRAPH, _GRAPHS) for a in node.attribute)


def outer_reads(graph: onnx.GraphProto) -> Iterator[str]:
    """Names a (sub)graph reads from its enclosing scopes, recursively, in order.

    A name defined inside the graph (input, initializer, node output) before it is read is
    local; a nested body's reads count when they are not local to this graph either. Names can
    repeat (once per reading node).
    """
    local = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        for name in node.input:
            if name and name not in local:
                yield name
        for g in subgraphs(node):
            yield from (n for n in outer_reads(g) if n not in local)
        local.update(node.output)


def node_reads(node: onnx.NodeProto) -> set[str]:
    """Every outer tensor a node reads: its inputs and what its subgraphs read from outside."""
    names = {n for n in node.input if n}
    for g in subgraphs(node):
        names.update(outer_reads(g))
    return names


def use_counts(graph: onnx.GraphProto) -> dict[str, int]:
    """How many times each tensor is read.

    Counted: node inputs (each occurrence), reads inside subgraphs (each reading input) and
    graph outputs.
    """
    count: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                count[name] = count.get(name, 0) + 1
        for g in subgraphs(node):
            for name in outer_reads(g):
                count[name] = count.get(name, 0) + 1
    for o in graph.output:
        count[o.name] = count.get(o.name, 0) + 1
    return count


def walk_graphs(graph: onnx.GraphProto) -> Iterator[tuple[onnx.GraphProto, int]]:
    """``graph`` and every nested subgraph, with its depth (0 for ``graph``), depth first."""
    stack: list[tuple[onnx.GraphProto, int]] = [(graph, 0)]
    while stack:
        g, depth = stack.pop()
        yield g, depth
        for node in reversed(g.node):
            stack.extend((s, depth + 1) for s in reversed(subgraphs(node)))


def nested_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Nodes inside the subgraphs of ``graph`` (not ``graph``'s own nodes)."""
    for g, depth in walk_graphs(graph):
        if depth:
            yield from g.node


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every node and tensor name used in ``graph`` and all its subgraphs.

    Tensor names cover inputs, outputs, initializers, value_info and node inputs/outputs. A
    new name must avoid all of them: ONNX requires a name defined in a body to differ from the
    names of the enclosing scopes.
    """
    names: set[str] = set()
    for g, _ in walk_graphs(graph):
        names.update(v.name for v in _values(g))
        names.update(t.name for t in g.initializer)
        names.update(t.values.name for t in g.sparse_initializer)
        for node in g.node:
            if node.name:
                names.add(node.name)
            names.update(n for n in node.input if n)
            names.update(n for n in node.output if n)
    return names


def _values(g: onnx.GraphProto) -> Iterable[onnx.ValueInfoProto]:
    return (*g.input, *g.output, *g.value_info)


def rename_reads(graph: onnx.GraphProto, old: str, new: str) -> int:
    """Rename the outer tensor ``old`` to ``new`` where a (sub)graph reads it, recursively.

    Stops where a scope defines its own ``old`` (shadowing). Returns the number of inputs
    renamed.
    """
    if old in {i.name for i in graph.initializer} | {i.name for i in graph.input}:
        return 0
    count = 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
                count += 1
        for g in subgraphs(node):
            count += rename_reads(g, old, new)
        if old in node.output:
            break
    return count


__all__ = ["all_names", "has_subgraph", "nested_nodes", "node_reads", "outer_reads",
           "rename_reads", "subgraphs", "use_counts", "walk_graphs"]
