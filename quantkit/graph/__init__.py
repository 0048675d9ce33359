"""ONNX graph layer shared by the Q/DQ writer, the FP16 pass, the linter and the transforms.

* :mod:`.index` -- :class:`GraphIndex`: producers, consumers, constants (initializers,
  ``Constant`` nodes, through ``Identity``), element types and use counts, built once;
* :mod:`.passes` -- preparation: opset upgrade, unique node names, ``Constant`` weights as
  initializers;
* :mod:`.edit` -- :class:`UniqueNames`, :class:`GraphEditor` (insert before/after), removal of
  unused initializers and nodes, topological sort;
* :mod:`.scope` -- If/Loop/Scan bodies and the outer tensors they read.

All of it counts reads inside subgraphs: a body that reads an outer initializer or tensor makes
its node a consumer of it, so clean-up never deletes what a branch needs, and new names are
unique across every scope.
"""

from quantkit.graph.edit import (
    GraphEditor,
    UniqueNames,
    read_names,
    remove_unused_initializers,
    remove_unused_nodes,
    toposort,
)
from quantkit.graph.index import FLOAT_TYPES, TRANSPARENT_OPS, GraphIndex, attr, type_name
from quantkit.graph.passes import (
    FP16_QDQ_OPSET,
    MAX_PARSER_OPSET,
    MIN_OPSET,
    constants_to_initializers,
    model_opset,
    name_nodes,
    upgrade_opset,
)
from quantkit.graph.scope import (
    all_names,
    has_subgraph,
    nested_nodes,
    node_reads,
    outer_reads,
    rename_reads,
    subgraphs,
    use_counts,
    walk_graphs,
)

__all__ = ["FLOAT_TYPES", "FP16_QDQ_OPSET", "MAX_PARSER_OPSET", "MIN_OPSET", "TRANSPARENT_OPS",
           "GraphEditor", "GraphIndex", "UniqueNames", "all_names", "attr",
           "constants_to_initializers", "has_subgraph", "model_opset", "name_nodes",
           "nested_nodes", "node_reads", "outer_reads", "read_names",
           "remove_unused_initializers", "remove_unused_nodes", "rename_reads", "subgraphs",
           "toposort", "type_name", "upgrade_opset", "use_counts", "walk_graphs"]
