"""What tests look for in a GraphDef: its nodes (with those of the functions in its library), the
dtypes they compute in, and what is marked to be compiled by XLA."""


def nodes(graph_def):
    """The graph's nodes and the nodes of every function in its library."""
    return list(graph_def.node) + [node for function in graph_def.library.function for node in function.node_def]


def dtypes(graph_def):
    """The DataType enums that any node's attributes name (T, dtype, DstT, ...)."""
    return {value.type for node in nodes(graph_def) for value in node.attr.values() if value.HasField("type")}


def xla_must_compile(graph_def):
    """Names of the nodes and functions that carry _XlaMustCompile=True (TF Serving's CPU build,
    without XLA, cannot run them)."""
    functions = [f.signature.name for f in graph_def.library.function if f.attr["_XlaMustCompile"].b]
    return functions + [node.name for node in nodes(graph_def) if node.attr["_XlaMustCompile"].b]
