"""Pure parts of the backend layer: shape flags, profile validation, registry, lazy imports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from quantkit.backends import (
    Backend,
    BuildOptions,
    backend_names,
    get_backend,
    parse_shapes,
    resolve_profile,
)
from quantkit.errors import InputError


def test_parse_shapes() -> None:
    assert parse_shapes("x:1x3x224x224") == {"x": (1, 3, 224, 224)}
    assert parse_shapes("a:1x4, b:2x4") == {"a": (1, 4), "b": (2, 4)}
    assert parse_shapes("input:0:8x3") == {"input:0": (8, 3)}  # name = up to the LAST ':'
    assert parse_shapes("s:") == {"s": ()}
    assert parse_shapes(None) == {} and parse_shapes("  ") == {}


@pytest.mark.parametrize("text", ["x", ":1x3", "x:1xax3", "x:1x-3", "x:1,x:2"])
def test_parse_shapes_rejects(text: str) -> None:
    # the library names its parameter; the command line prints it as --shapes (cli.flags)
    with pytest.raises(InputError, match="^shapes=") as err:
        parse_shapes(text)
    from quantkit.cli.flags import to_flags

    assert to_flags(str(err.value)).startswith(f"--shapes {text}:")


def test_parse_shapes_zero_and_huge_dims() -> None:
    with pytest.raises(InputError, match="shapes='input:0x3': a dimension of 0 makes 'input'"):
        parse_shapes("input:0x3")
    with pytest.raises(InputError, match="max_shapes=: .* over 2147483647"):
        parse_shapes("x:1x2147483648", "max_shapes")
    # an empty cache is a legitimate minimum, also under a recipe key
    assert parse_shapes("cache:1x0x64", "min_shapes") == {"cache": (1, 0, 64)}
    assert parse_shapes("cache:1x0x64", "build.min_shapes") == {"cache": (1, 0, 64)}
    with pytest.raises(InputError, match="build.shapes='c:1x0': a dimension of 0"):
        parse_shapes("c:1x0", "build.shapes")
    assert parse_shapes("x:2147483647") == {"x": (2147483647,)}


def test_resolve_profile_fills_static_and_defaults_min_max_to_opt() -> None:
    ranges = resolve_profile({"x": (-1, 3, 8, 8), "k": (4,)},
                             BuildOptions(shapes={"x": (2, 3, 8, 8)},
                                          max_shapes={"x": (8, 3, 8, 8)}))
    assert ranges["x"].to_json() == {"min": [2, 3, 8, 8], "opt": [2, 3, 8, 8],
                                     "max": [8, 3, 8, 8]}
    assert ranges["k"].min == ranges["k"].max == (4,)


@pytest.mark.parametrize(("opts", "match"), [
    (dict(shapes={"y": (1, 3)}), "no input named 'y'.*x \\[-1, 3\\]"),
    (dict(shapes={"x": (1, 3, 1)}), "rank 2"),
    (dict(shapes={"x": (1, 4)}), "dimension 1 of input 'x' is fixed to 3"),
    (dict(shapes={"x": (2, 3)}, min_shapes={"x": (4, 3)}), "min \\[4x3\\] <= opt \\[2x3\\]"),
    (dict(shapes={"x": (4, 3)}, max_shapes={"x": (2, 3)}), "does not hold in dimension"),
    (dict(), "input 'x' has dynamic dimensions \\[-1, 3\\].*shapes=x:1x3"),
])
def test_resolve_profile_errors(opts: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        resolve_profile({"x": (-1, 3)}, BuildOptions(**opts))


def test_build_options_validation() -> None:
    with pytest.raises(InputError, match="opt_level=6"):
        BuildOptions(opt_level=6)
    with pytest.raises(InputError, match="workspace_mib=0"):
        BuildOptions(workspace_mib=0)
    with pytest.raises(InputError, match="min_shapes=x.*no opt shape"):
        BuildOptions(min_shapes={"x": (1,)})


def test_registry() -> None:
    assert backend_names()[:2] == ["tensorrt", "tensorrt-rtx"]
    for name in ("tensorrt", "tensorrt-rtx"):
        backend = get_backend(name)
        assert isinstance(backend, Backend) and backend.name == name
        info = backend.describe()
        assert info["name"] == name and info["install"].startswith("pip install 'quantkit[")
    assert get_backend("tensorrt-rtx").describe()["timing_cache"] is False
    with pytest.raises(InputError, match="unknown backend"):
        get_backend("onnxruntime-gpu")


def test_tensorrt_stubs_alone_are_not_tensorrt() -> None:
    # tensorrt-stubs installs an importable, empty 'tensorrt' namespace package.
    spec = importlib.util.find_spec("tensorrt")
    if spec is None:
        pytest.skip("no tensorrt package at all")
    if spec.origin is not None:
        pytest.skip("the real TensorRT is installed")
    assert get_backend("tensorrt").available() is False
    assert get_backend("tensorrt").version() is None
    assert "tensorrt" not in sys.modules  # looked at, not imported


def test_importing_backends_is_light() -> None:
    code = ("import quantkit.backends, quantkit.backends.base, quantkit.backends.sidecar, "
            "quantkit.cli.build, sys, json; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"tensorrt", "tensorrt_rtx_bindings", "tensorrt_bindings", "onnx",
                         "pycuda", "cuda", "onnxruntime"}
