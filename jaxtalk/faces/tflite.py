"""A TensorFlow Lite graph (the float CNNs MediaPipe ships) read from its `.tflite` file and run as a JAX function.

The `.tflite` flatbuffer is parsed with the `tflite` package (generated schema bindings, pure Python); every
operator becomes the matching `jax.lax` call, so the face networks run jitted, batched over frames, on whatever
device JAX uses, beside the talking-head models. Only the operators MediaPipe's face detector and face-mesh
landmark networks use are implemented; any other raises NotImplementedError naming it.

Layouts follow TFLite: activations NHWC, CONV_2D filters OHWI, DEPTHWISE_CONV_2D filters 1HWC; float16 weights
are widened to float32 when read (the DEQUANTIZE nodes that do this in the file become constants), and sparse
weights (TFLite's per-dimension DENSE / SPARSE_CSR format, as in the full-range face detector) are expanded to
dense arrays when read (the DENSIFY nodes become constants too).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers

_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_ACTIVATIONS: dict[int, Callable[[jax.Array], jax.Array]] = {
    0: lambda x: x, 1: jax.nn.relu, 2: lambda x: jnp.clip(x, -1.0, 1.0), 3: lambda x: jnp.clip(x, 0.0, 6.0),
}


class TFLiteError(ValueError):
    """A `.tflite` file that cannot be read or uses something this reader does not implement."""


@dataclasses.dataclass(frozen=True)
class Op:
    """One operator: its builtin name, input / output tensor indices and parsed options."""

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()

    def opt(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


@dataclasses.dataclass(frozen=True)
class Graph:
    """The first subgraph of a `.tflite` model: operators in execution order, graph inputs / outputs (tensor
    indices), the shapes and names of every tensor, and the constant tensors (float32 / int32 numpy)."""

    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    constants: dict[int, np.ndarray] = dataclasses.field(hash=False, compare=False)

    def input_shape(self, k: int = 0) -> tuple[int, ...]:
        return self.shapes[self.inputs[k]]


def _options(op, name: str) -> dict[str, Any]:
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return {}
    cls = {
        "CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions, "ADD": tflite.AddOptions, "CONCATENATION": tflite.ConcatenationOptions,
        "RESHAPE": tflite.ReshapeOptions, "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
        "DEPTH_TO_SPACE": tflite.DepthToSpaceOptions,
    }.get(name)
    if cls is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"):
        out.update(padding="SAME" if o.Padding() == 0 else "VALID", stride=(o.StrideH(), o.StrideW()),
                   activation=o.FusedActivationFunction())
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        out["dilation"] = (o.DilationHFactor(), o.DilationWFactor())
    if name == "MAX_POOL_2D":
        out["window"] = (o.FilterHeight(), o.FilterWidth())
    if name in ("ADD", "CONCATENATION"):
        out["activation"] = o.FusedActivationFunction()
    if name == "CONCATENATION":
        out["axis"] = o.Axis()
    if name == "RESIZE_BILINEAR":
        out.update(align_corners=bool(o.AlignCorners()), half_pixel_centers=bool(o.HalfPixelCenters()))
    if name == "DEPTH_TO_SPACE":
        out["block_size"] = o.BlockSize()
    if name == "RESHAPE" and o.NewShapeLength():
        out["new_shape"] = tuple(int(v) for v in o.NewShapeAsNumpy())
    return out


def _index_vector(dm, kind: str) -> np.ndarray:
    """A DimensionMetadata's array_segments / array_indices union (Int32 / Uint16 / Uint8 vector) as int64."""
    import tflite

    kind_type = getattr(dm, f"Array{kind}Type")()
    table = getattr(dm, f"Array{kind}")()
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind_type)
    if cls is None or table is None:
        raise TFLiteError(f"sparse tensor: unsupported {kind.lower()} vector type {kind_type}")
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """Expand the stored values of a sparse constant to a dense array of `shape`: TFLite's format with one
    DimensionMetadata per dimension, each DENSE (dense_size entries) or SPARSE_CSR (array_segments give each
    parent position's range of array_indices), in traversal order; block-sparse layouts are not used by the
    MediaPipe models and are refused."""
    order = sparsity.TraversalOrderAsNumpy() if sparsity.TraversalOrderLength() else np.arange(len(shape))
    if sparsity.BlockMapLength() or list(order) != list(range(len(shape))):
        raise NotImplementedError("block-sparse or reordered sparse tensors are not implemented")
    dense = np.zeros(int(np.prod(shape)), values.dtype)
    positions = np.zeros(1, np.int64)  # position of each entry of the previous level
    flat = np.zeros(1, np.int64)  # its flat offset in the dense array
    strides = np.cumprod((1, *shape[::-1]))[::-1][1:]
    for d in range(len(shape)):
        dm = sparsity.DimMetadata(d)
        if dm.Format() == 0:  # DENSE
            n = dm.DenseSize()
            positions = (positions[:, None] * n + np.arange(n)).ravel()
            flat = (flat[:, None] + np.arange(n) * strides[d]).ravel()
        else:  # SPARSE_CSR
            seg, idx = _index_vector(dm, "Segments"), _index_vector(dm, "Indices")
            counts = seg[positions + 1] - seg[positions]
            positions = np.concatenate([np.arange(seg[p], seg[p + 1]) for p in positions]) if len(positions) else positions
            flat = np.repeat(flat, counts) + idx[positions] * strides[d]
    if len(positions) != values.size:
        raise TFLiteError(f"sparse tensor: {values.size} stored values for {len(positions)} positions")
    dense[flat] = values[positions]
    return dense.reshape(shape)


def read_graph(path: str | Path) -> Graph:
    """Parse `path` (a float or float16-weight TFLite model) into a `Graph`."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    path = Path(path)
    try:
        buf = path.read_bytes()
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
    except Exception as e:  # the flatbuffer reader raises assorted errors on foreign bytes
        raise TFLiteError(f"{path}: not a readable .tflite model ({type(e).__name__}: {e})") from None
    op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    names, shapes, constants = [], [], {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        names.append(t.Name().decode())
        shapes.append(tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ())
        data = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
        if isinstance(data, np.ndarray) and data.size:
            dtype = _NP_TYPES.get(t.Type())
            if dtype is None:
                raise TFLiteError(f"{path}: tensor {names[-1]!r} has unsupported type {t.Type()}")
            stored = np.frombuffer(data.tobytes(), dtype)
            constants[i] = (densify(stored, shapes[-1], t.Sparsity()) if t.Sparsity() is not None
                            else stored.reshape(shapes[-1]))
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if name == "CUSTOM":
            name = "CUSTOM:" + code.CustomCode().decode()
        ins = tuple(int(v) for v in op.InputsAsNumpy())
        outs = tuple(int(v) for v in op.OutputsAsNumpy())
        if name == "DEQUANTIZE" and ins[0] in constants:  # float16 weights widened once, here
            constants[outs[0]] = constants[ins[0]].astype(np.float32)
            continue
        if name == "DENSIFY" and ins[0] in constants:  # already expanded when read
            constants[outs[0]] = constants[ins[0]]
            continue
        ops.append(Op(name, ins, outs, tuple(sorted(_options(op, name).items()))))
    for k, v in constants.items():
        if v.dtype == np.float16:
            constants[k] = v.astype(np.float32)
    inputs = tuple(int(v) for v in graph.InputsAsNumpy())
    outputs = tuple(int(v) for v in graph.OutputsAsNumpy())
    for op in ops:
        if op.name not in _OPS:
            raise NotImplementedError(f"{path}: TFLite operator {op.name} is not implemented in jaxtalk.faces.tflite")
    return Graph(tuple(ops), inputs, outputs, tuple(names), tuple(shapes), constants)


def params_of(graph: Graph) -> dict[str, jax.Array]:
    """The constant tensors as a pytree (keyed by tensor index), to pass to `run` as a jit argument."""
    return {str(k): jnp.asarray(v) for k, v in graph.constants.items()}


def _conv(x, w, b, op: Op, depthwise: bool):
    if depthwise and w.shape[-1] == x.shape[-1]:  # 1HWC, one filter per channel: by taps, as XLA:CPU is slow here
        y = layers.depthwise_conv_by_taps(x, w[0], op.opt("stride"), op.opt("padding"), op.opt("dilation"))
    else:
        if depthwise:  # 1HWC with a channel multiplier -> HWIO, one group per input channel
            kernel, groups, dn = jnp.transpose(w, (1, 2, 0, 3)), x.shape[-1], ("NHWC", "HWIO", "NHWC")
        else:
            kernel, groups, dn = w, 1, ("NHWC", "OHWI", "NHWC")
        y = jax.lax.conv_general_dilated(x, kernel, op.opt("stride"), op.opt("padding"),
                                         rhs_dilation=op.opt("dilation"), dimension_numbers=dn,
                                         feature_group_count=groups)
    if b is not None:
        y = y + b
    return _ACTIVATIONS[op.opt("activation", 0)](y)


def _max_pool(x, op: Op):
    kh, kw = op.opt("window")
    sh, sw = op.opt("stride")
    n, h, w, c = x.shape
    if (kh, kw) == (sh, sw) and h % kh == 0 and w % kw == 0:
        # tiled pooling as a maximum of strided views: jitted on XLA:CPU (jax 0.10.2), both reduce_window and a
        # reshape + max gave wrong values for some channels inside the detector graph (eager was right)
        y = functools.reduce(jnp.maximum, [x[:, i::kh, j::kw] for i in range(kh) for j in range(kw)])
        return _ACTIVATIONS[op.opt("activation", 0)](y)
    y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kh, kw, 1), (1, sh, sw, 1), op.opt("padding"))
    return _ACTIVATIONS[op.opt("activation", 0)](y)


def _reshape(x, shape_arr, op: Op, batch: int):
    shape = tuple(int(v) for v in (np.asarray(shape_arr) if shape_arr is not None else op.opt("new_shape")))
    return jnp.reshape(x, (batch, *shape[1:]))  # the leading (batch) axis follows the input batch


def _pad(x, paddings):
    return jnp.pad(x, [(int(a), int(b)) for a, b in np.asarray(paddings)])


def _resize_bilinear(x, size, op: Op):
    """TFLite RESIZE_BILINEAR with half-pixel centres (source coordinate (i + 0.5) / scale - 0.5, clamped at the
    borders), the setting the full-range detector's upsampling uses."""
    if op.opt("align_corners") or not op.opt("half_pixel_centers"):
        raise NotImplementedError("RESIZE_BILINEAR without half_pixel_centers is not implemented")
    out_h, out_w = (int(v) for v in np.asarray(size))

    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(np.int32)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(x.shape[1], out_h)
    x0, x1, fx = axis(x.shape[2], out_w)
    rows = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def _depth_to_space(x, op: Op):
    """TFLite / TensorFlow DEPTH_TO_SPACE (DCR order): out[h * b + i, w * b + j, c] = in[h, w, (i * b + j) * C + c]."""
    b = op.opt("block_size")
    n, h, w, c = x.shape
    y = x.reshape(n, h, w, b, b, c // (b * b))
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * b, w * b, c // (b * b))


_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "ADD", "RELU", "PRELU", "PAD", "RESHAPE", "CONCATENATION",
        "RESIZE_BILINEAR", "DEPTH_TO_SPACE"}


def run(graph: Graph, params: dict[str, jax.Array], *inputs: jax.Array) -> tuple[jax.Array, ...]:
    """Evaluate the graph on NHWC float32 inputs with any batch size; returns the graph outputs in order.
    Traceable: wrap in `jax.jit` with `graph` static (see `compile_graph`)."""
    env: dict[int, jax.Array] = dict(zip(graph.inputs, inputs))
    batch = inputs[0].shape[0]

    def get(i: int):
        if i < 0:
            return None
        if i in env:
            return env[i]
        return params[str(i)]

    for op in graph.ops:
        a = [get(i) for i in op.inputs]
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            y = _conv(a[0], a[1], a[2] if len(a) > 2 else None, op, op.name == "DEPTHWISE_CONV_2D")
        elif op.name == "MAX_POOL_2D":
            y = _max_pool(a[0], op)
        elif op.name == "ADD":
            y = _ACTIVATIONS[op.opt("activation", 0)](a[0] + a[1])
        elif op.name == "RELU":
            y = jax.nn.relu(a[0])
        elif op.name == "PRELU":
            y = jnp.where(a[0] >= 0, a[0], a[0] * a[1])
        elif op.name == "PAD":
            y = _pad(a[0], graph.constants[op.inputs[1]])
        elif op.name == "RESHAPE":
            y = _reshape(a[0], graph.constants.get(op.inputs[1]) if len(op.inputs) > 1 else None, op, batch)
        elif op.name == "RESIZE_BILINEAR":
            y = _resize_bilinear(a[0], graph.constants[op.inputs[1]], op)
        elif op.name == "DEPTH_TO_SPACE":
            y = _depth_to_space(a[0], op)
        elif op.name == "CONCATENATION":
            y = _ACTIVATIONS[op.opt("activation", 0)](jnp.concatenate(a, axis=op.opt("axis")))
        else:  # read_graph has already refused anything else
            raise NotImplementedError(op.name)
        env[op.outputs[0]] = y
    return tuple(env[i] for i in graph.outputs)


def compile_graph(graph: Graph) -> Callable[..., tuple[jax.Array, ...]]:
    """`fn(params, *inputs)` jitted for this graph (params from `params_of`)."""
    return jax.jit(lambda params, *inputs: run(graph, params, *inputs))
