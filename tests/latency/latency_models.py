"""Old name of :mod:`tests.builders.latency`, kept while other branches still import it."""

from tests.builders.latency import (  # noqa: F401
    F16,
    F32,
    FP8,
    bottleneck,
    conv_chain,
    conv_model,
    matmul_layernorm,
    matmul_model,
    packed_qkv_attention,
    transformer_block,
)
