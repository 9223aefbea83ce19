"""Memory planner: per-device bytes of a training config on a topology, and whether it fits.

  python -m r1.tools.plan --config=configs/r1_zero_deepseek_v3.py --topology=v5p-1024 \\
    --config.init.hf_dir=/mnt/ckpt/DeepSeek-V3-Base      # params in the checkpoint's compute dtype
  python -m r1.tools.plan --config=configs/tiny_r1_zero.py --topology=cpu-1 --json_out=/tmp/plan.json

What is counted, per device (the mesh from --mesh or config.mesh.shape, axes data/fsdp/expert/tensor):
  params, adam, reference  exact: every array's shard shape under r1.sharding.TRAIN_RULES on an
                           abstract mesh (no devices needed); the Adam moments are the optimizer's
                           own eval_shape'd state, sharded like the params; the reference is a copy.
  gradients                the micro-batch gradients plus the accumulator (one copy when there is
                           a single micro-batch), in the parameter dtype and sharding.
  activations              one micro-batch of the update, analytic (see `activation_bytes`).
  latent KV cache          the sampler's prompt cache (shared by the G samples) and per-sample cache,
                           rows split over the batch axes: (kv_lora_rank + qk_rope_head_dim) x layers
                           x dtype bytes per token for MLA, 2 x K/V heads x head_dim for the dense
                           GQA students (r1.sampling.cache_bytes_per_token).
The train-step peak is state + gradients + activations; the rollout peak is state + KV cache +
prefill/decode working memory. The plan fits when the larger of the two is under the device memory.
Left out: XLA's collective buffers and fragmentation, and the separately jitted reference forward
(a forward only, smaller than the update). tests/tools/test_plan.py checks the tiny config against
XLA:CPU's compiled memory; XLA:CPU schedules a remat'd layer's recomputation early, so there the
"dots" and "full" estimates are checked against the residuals the forward saves instead.
"""

import dataclasses
import functools
import json
import math
import os

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec
from ml_collections import config_flags
import optax

from r1.tools import tpu_topology
from r1 import optim
from r1 import sharding
from r1.model import ModelConfig, abstract_variables, get_model_config

GiB = 1 << 30

# HBM per chip by generation; chips per slice come from r1.tools.tpu_topology (v4 and v5p slices
# are named by TensorCores, two per chip: v5p-1024 is 512 chips, one JAX device each).
HBM_PER_CHIP = {
    "v4": 32 * GiB,    # cloud.google.com/tpu/docs/v4: 32 GiB HBM2 per chip
    "v5e": 16 * GiB,   # cloud.google.com/tpu/docs/v5e: 16 GiB HBM2 per chip
    "v5p": 95 * GiB,   # cloud.google.com/tpu/docs/v5p: 95 GiB HBM2e per chip
    "v6e": 32 * GiB,   # cloud.google.com/tpu/docs/v6e: 32 GiB HBM per chip
}


def host_memory_bytes() -> int:
  """Physical memory of this machine."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def topology_devices(topology: str) -> tuple[int, int]:
  """'v5p-1024' -> (512 devices, 95 GiB each); 'v5e-16' is 'v5litepod-16'; 'cpu-8' -> (8, host
  memory / 8): fake CPU devices share the host's memory."""
  name, _, count = topology.rpartition("-")
  if name == "cpu" and count.isdigit():
    return int(count), host_memory_bytes() // int(count)
  if name == "v5e":
    topology = f"v5litepod-{count}"
  t = tpu_topology.tpu_topology(topology)
  return t.chips, HBM_PER_CHIP[t.generation]


def resolve_mesh_shape(mesh_shape: dict, num_devices: int) -> dict[str, int]:
  """Fills missing axes with 1 and a -1 axis with the remaining devices (as r1.sharding.make_mesh)."""
  unknown = set(mesh_shape) - set(sharding.MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected some of {sharding.MESH_AXES}")
  sizes = {a: int(mesh_shape.get(a, 1)) for a in sharding.MESH_AXES}
  known = math.prod(s for s in sizes.values() if s != -1)
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {mesh_shape}")
  if free:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices are not divisible by the fixed mesh axes {mesh_shape}")
    sizes[free[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, the topology has {num_devices}")
  return sizes


def model_config_of(config) -> ModelConfig:
  """The policy's ModelConfig as r1.stages.common.build_policy makes it, without loading weights.

  With init.hf_dir set the parameters are in the compute dtype (r1.load_hf_checkpoint's rule) and
  the shapes come from its config.json when the directory exists; otherwise config.model.name,
  with the tokenizer's vocabulary when the config trains one.
  """
  overrides = dict(config.model.overrides)
  hf_dir = config.init.hf_dir
  if hf_dir:
    overrides = {"param_dtype": overrides.get("dtype", "float32"), **overrides}
    path = os.path.join(hf_dir, "config.json")
    if os.path.exists(path):
      from r1.checkpoints import hf  # pylint: disable=g-import-not-at-top
      with open(path) as f:
        return hf.config_from_hf(json.load(f), **overrides)
  else:
    vocab = config.tokenizer.vocab_size
    if vocab:
      overrides.setdefault("vocab_size", vocab)
  return get_model_config(config.model.name, **overrides)


@dataclasses.dataclass(frozen=True)
class Workload:
  """One update's shapes: rows (sequences) per update, num_micro_batches, seq_len T, the LM head's
  logits_chunk (None: all of T), reference (a frozen copy is kept), and the rollout: prompts,
  samples G, prompt_len P (its bucket) and max_new_tokens (0: no sampler, SFT)."""
  stage: str
  rows: int
  num_micro_batches: int
  seq_len: int
  logits_chunk: int | None
  reference: bool
  prompts: int = 0
  samples: int = 0
  prompt_len: int = 0
  max_new_tokens: int = 0


def workload_of(config) -> Workload:
  """GRPO (rollout + update on prompts x G rows of the longest prompt bucket + max_new_tokens) or SFT."""
  from r1.sampling import bucket_length  # pylint: disable=g-import-not-at-top
  if config.stage == "sft":
    s = config.sft
    return Workload("sft", s.batch_size, s.num_micro_batches, s.seq_len, s.logits_chunk_size, False)
  g, n = config.rollout.num_samples, config.rollout.max_new_tokens
  p = bucket_length(max(config.data.length_buckets))
  gc = config.grpo
  # One update takes one of the rollout's num_mini_batches mini-batches (r1.grpo.make_grpo_step).
  return Workload("grpo", config.data.batch_size * g // gc.num_mini_batches, gc.num_micro_batches, p + n,
                  gc.logits_chunk_size,
                  gc.kl_coef > 0, prompts=config.data.batch_size, samples=g, prompt_len=p, max_new_tokens=n)


def _abstract_mesh(mesh_shape: dict[str, int]) -> AbstractMesh:
  return AbstractMesh(tuple(mesh_shape[a] for a in sharding.MESH_AXES), sharding.MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(sharding.MESH_AXES))


def _shard_bytes(shape, dtype, named: NamedSharding) -> int:
  """Bytes of the largest shard; uneven dimensions are padded (ceil), as GSPMD does."""
  sizes = dict(zip(named.mesh.axis_names, named.mesh.axis_sizes))
  dims = []
  for dim, axes in zip(shape, tuple(named.spec) + (None,) * (len(shape) - len(named.spec))):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    dims.append(-(-dim // math.prod(sizes[a] for a in axes)))
  return math.prod(dims) * jnp.dtype(dtype).itemsize


def state_bytes(mc: ModelConfig, config, mesh_shape: dict[str, int]) -> dict[str, int]:
  """Per-device bytes of params (+ balancing bias), Adam state and one params-sized copy, from the
  real abstract variables and optimizer state sharded by TRAIN_RULES on an abstract mesh."""
  mesh = _abstract_mesh(mesh_shape)
  boxed = abstract_variables(mc)
  shardings = sharding.variable_shardings(boxed, mesh)
  unboxed = nn.unbox(boxed)
  per_leaf = lambda tree, sh: sum(_shard_bytes(x.shape, x.dtype, s) for x, s in
                                  zip(jax.tree.leaves(tree), jax.tree.leaves(sh)))
  params = per_leaf(unboxed["params"], shardings["params"])
  bias = per_leaf(unboxed.get("moe_bias", {}), shardings.get("moe_bias", {}))
  o = config.optimizer
  optimizer, _ = optim.make_optimizer(o.learning_rate, weight_decay=o.weight_decay,
                                      max_grad_norm=o.max_grad_norm, b2=o.b2)
  abstract_opt = jax.eval_shape(optimizer.init, unboxed["params"])
  replicated = NamedSharding(mesh, PartitionSpec())
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, shardings["params"],
                                 transform_non_params=lambda _: replicated,
                                 is_leaf=lambda x: isinstance(x, NamedSharding))
  return {"params": params + bias, "params_only": params, "adam": per_leaf(abstract_opt, opt_sh)}


def _ffn_terms(mc: ModelConfig, moe: bool, tensor: int) -> tuple[float, float]:
  """Per-token bytes of one FFN block: (weight-matmul outputs, everything else)."""
  cd = jnp.dtype(mc.dtype).itemsize
  d = mc.hidden_size
  if not moe:
    f = -(-mc.intermediate_size // tensor)
    return (2 * f + d) * cd, (f + 2 * d) * cd                 # gate, up, down | silu*up, norm, residual
  e, k, f = mc.n_routed_experts, mc.num_experts_per_tok, mc.moe_intermediate_size
  fs = -(-f * mc.n_shared_experts // tensor)
  dots = e * 4 + (2 * fs + d) * cd                            # router logits (f32), shared expert
  # Routed experts per assignment: dispatched input, gate, up, silu*up, output (+ f32 combine).
  per_assignment = (2 * d + 3 * f) * cd
  if mc.moe_impl == "ragged":
    routed = k * per_assignment + k * d * 4
  else:
    # einsum: [E, C, .] buffers; under autodiff lax.cond keeps both branches' residuals: the
    # fast buffer (C = 2 N K / E) and the all-tokens one (C = N).
    cap = mc.capacity_factor * k if mc.capacity_factor is not None else e + 2 * k
    routed = cap * per_assignment + k * d * 4
  return dots, routed + (fs + e + 2 * d) * cd + e * 4           # + shared silu*up, norm, residual, scores


def layer_terms(mc: ModelConfig, layer: int, seq_len: int, tensor: int) -> dict[str, float]:
  """Per-token bytes of decoder layer `layer`'s intermediates, split by what a remat policy keeps:
  input (the layer input), dots (weight-matmul outputs, kept by "dots"), other (norms, RoPE,
  the attention context, routed experts), scores (the [H, T] attention scores: softmax output in
  f32 and its compute-dtype copy, per query token)."""
  cd = jnp.dtype(mc.dtype).itemsize
  d, h = mc.hidden_size, -(-mc.num_attention_heads // tensor)
  if mc.is_gqa:
    # q, k, v, o projections | norm, RoPE'd q and k, context, residual. K/V heads are replicated
    # over `tensor` (sharding rules), so they are not divided by it.
    hd, kv = mc.gqa_head_dim, mc.kv_heads
    attn_dots = (h * hd + 2 * kv * hd + d) * cd
    attn_other = (2 * d + 2 * h * hd + kv * hd) * cd
  else:
    q_lora = mc.q_lora_rank or 0
    lat, rope = mc.kv_lora_rank, mc.qk_rope_head_dim
    attn_dots = (q_lora + h * mc.qk_head_dim + lat + rope + h * (mc.qk_nope_head_dim + mc.v_head_dim) + d) * cd
    attn_other = (d + q_lora + lat + h * rope + rope + h * mc.v_head_dim + d) * cd
  ffn_dots, ffn_other = _ffn_terms(mc, mc.is_moe_layer(layer), tensor)
  return {"input": d * cd, "dots": attn_dots + ffn_dots, "other": attn_other + ffn_other,
          "scores": h * seq_len * (4 + cd)}


def activation_bytes(mc: ModelConfig, rows: int, seq_len: int, logits_chunk: int | None, tensor: int) -> dict:
  """Activation bytes of one micro-batch's forward + backward on one device (rows already split).

  With per-token layer terms (layer_terms) times tokens = rows x T:
    none:  every layer keeps input + dots + other + scores;
    dots:  every layer keeps input + dots; one layer at a time recomputes other + scores;
    full:  every layer keeps its input; one layer at a time recomputes dots + other + scores.
  Plus what every layer shares (RoPE cos/sin f32[T, R/2] twice and the bool[T, T] mask, per row),
  the embedding output and the final norm's input, the backward's working set of one layer (the
  f32 gradient of its scores and of a few [T, D] tensors), and the LM head's [rows, chunk, V] f32
  logits (forward, log-softmax and their gradient: 3 copies; each chunk is rematerialised).
  """
  tokens = rows * seq_len
  terms = [layer_terms(mc, i, seq_len, tensor) for i in range(mc.num_hidden_layers)]
  keep = {"none": ("input", "dots", "other", "scores"), "dots": ("input", "dots"), "full": ("input",)}[mc.remat]
  saved = sum(t[k] for t in terms for k in keep)
  recomputed = max(sum(v for k, v in t.items() if k not in keep) for t in terms)
  h = -(-mc.num_attention_heads // tensor)
  backward = h * seq_len * 4 + 3 * mc.hidden_size * 4
  chunk = min(logits_chunk or seq_len, seq_len)
  head = 3 * rows * chunk * mc.vocab_size * 4
  return {"saved_layers": saved * tokens, "layer_args": (mc.rope_dim * 4 + seq_len + 1) * tokens,
          "hidden": 2 * mc.hidden_size * jnp.dtype(mc.dtype).itemsize * tokens,
          "recomputed_layer": recomputed * tokens, "backward": backward * tokens, "logits": head}


def sampler_bytes(mc: ModelConfig, prompts: int, samples: int, prompt_len: int, max_new_tokens: int,
                  tensor: int) -> dict:
  """The rollout's per-device bytes for `prompts` prompts (already split over the batch axes).

  kv_cache: the latent cache, prompt part [prompts, P] once (prefix sharing) plus the generated
  part [prompts, G, max_new]; decode_state: next-token logits f32[prompts, G, V], tokens and
  logprobs [prompts, G, max_new]; working: the larger of the prefill's one-layer forward over the
  prompts and one decode step's f32 scores [prompts, G, H, P + max_new] (plus softmax).
  """
  from r1.sampling import cache_bytes_per_token  # pylint: disable=g-import-not-at-top
  per_token = cache_bytes_per_token(mc)
  kv = prompts * (prompt_len + samples * max_new_tokens) * per_token
  decode_state = prompts * samples * (mc.vocab_size * 4 + max_new_tokens * 8)
  prefill = max(sum(layer_terms(mc, i, prompt_len, tensor).values()) for i in range(mc.num_hidden_layers))
  h = -(-mc.num_attention_heads // tensor)
  decode = prompts * samples * h * (prompt_len + max_new_tokens) * 8
  return {"kv_cache": kv, "decode_state": decode_state, "working": max(prefill * prompts * prompt_len, decode)}


# LM-head chunks the split search tries, whole first: chunking only bounds the [rows, chunk, V] logits.
LOGITS_CHUNKS = (None, 1024, 512, 256, 128)
# The share of a device's memory an automatically chosen split may plan to use: the estimate is
# within -20%/+30% of XLA's compiled memory (tests/tools/test_plan.py, tests/stages/test_update_memory.py),
# and collectives and fragmentation are not counted.
FIT_HEADROOM = 0.8


def device_memory_bytes(device=None) -> int:
  """Memory of one JAX device: the allocator's limit on an accelerator, this machine's memory on the CPU."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return host_memory_bytes() // max(1, len(jax.local_devices()) if device.platform == "cpu" else 1)


def update_peak_bytes(mc: ModelConfig, *, resident: int, params: int, rows: int, seq_len: int,
                      num_micro_batches: int, logits_chunk: int | None, batch_shards: int = 1, tensor: int = 1) -> int:
  """Per-device peak of one update of `rows` sequences of `seq_len` tokens: the resident state
  (params, Adam, reference), the gradients (plus their accumulator with micro-batches) and one
  micro-batch's activations (`activation_bytes`, its rows split over `batch_shards`)."""
  micro_rows = -(-(rows // num_micro_batches) // batch_shards)
  grads = params * (2 if num_micro_batches > 1 else 1)
  return resident + grads + sum(activation_bytes(mc, micro_rows, seq_len, logits_chunk, tensor).values())


def fit_update_split(peak_of, rows: int, limit: float) -> tuple[int, int | None] | None:
  """The fastest (num_micro_batches, logits_chunk_size) with peak_of(mb, chunk) <= limit, or None.

  Fewer micro-batches first (each one is another pass over the weights), then larger LM-head
  chunks; num_micro_batches divides `rows`."""
  for num_micro_batches in (m for m in range(1, rows + 1) if rows % m == 0):
    for chunk in LOGITS_CHUNKS:
      if peak_of(num_micro_batches, chunk) <= limit:
        return num_micro_batches, chunk
  return None


def plan(config, mesh_shape: dict | None = None, topology: str = "cpu-1", device_bytes: int | None = None,
         model_config: ModelConfig | None = None) -> dict:
  """Per-device memory of `config`'s training stage on `topology`, and whether it fits.

  Args:
    config: an experiment ConfigDict (configs/*.py): model, init, tokenizer, data / rollout / grpo
      or sft, optimizer, mesh.
    mesh_shape: {axis: size} over data/fsdp/expert/tensor, one axis may be -1; None:
      config.mesh.shape.
    topology: "v5p-1024", "v6e-256", "v5e-16", "v4-32", or "cpu-<devices>".
    device_bytes: memory per device, instead of the topology's (the devices a run really has).
    model_config: the policy's ModelConfig, instead of the one `model_config_of(config)` derives.
  Returns:
    {"model", "topology", "mesh", "device_bytes", "workload", "remat", "components": {name: bytes},
     "train_peak", "rollout_peak", "peak", "fits", "margin" (device bytes - peak), "notes"}; all
    byte counts are per device.
  """
  num_devices, topology_bytes = topology_devices(topology)
  device_bytes = device_bytes or topology_bytes
  if mesh_shape is None:
    mesh_shape = dict(config.mesh.shape)
  mesh_shape = resolve_mesh_shape(mesh_shape, num_devices)
  mc = model_config or model_config_of(config)
  work = workload_of(config)
  notes = []
  if not config.init.hf_dir and mc.param_dtype != mc.dtype:
    notes.append(f"init.hf_dir is empty: {mc.param_dtype} parameters as random init makes them; a checkpoint "
                 f"loads in {mc.dtype} (set --config.init.hf_dir to plan that)")

  batch_axes = nn.logical_to_mesh_axes(("batch",), sharding.TRAIN_RULES)[0]
  batch_axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes or ())
  batch_shards = math.prod(mesh_shape[a] for a in batch_axes)
  tensor = mesh_shape["tensor"]
  if work.rows % work.num_micro_batches:
    raise ValueError(f"{work.rows} rows per update are not divisible by num_micro_batches={work.num_micro_batches}")
  micro_rows = work.rows // work.num_micro_batches
  rows = -(-micro_rows // batch_shards)
  if micro_rows % batch_shards:
    notes.append(f"a micro-batch of {micro_rows} rows over {batch_shards} batch shards "
                 f"({'x'.join(batch_axes)}): {rows} per device, some devices idle or padded")

  state = state_bytes(mc, config, mesh_shape)
  grads = state["params_only"] * (2 if work.num_micro_batches > 1 else 1)
  act = activation_bytes(mc, rows, work.seq_len, work.logits_chunk, tensor)
  components = {"params": state["params"], "adam": state["adam"], "gradients": grads,
                "reference": state["params_only"] if work.reference else 0, "activations": sum(act.values())}
  resident = components["params"] + components["adam"] + components["reference"]
  # One definition of the update's peak, at this split and at every split fit_update_split tries.
  peak_of = functools.partial(update_peak_bytes, mc, resident=resident, params=state["params_only"],
                              rows=work.rows, seq_len=work.seq_len, batch_shards=batch_shards, tensor=tensor)
  train_peak = peak_of(num_micro_batches=work.num_micro_batches, logits_chunk=work.logits_chunk)
  rollout_peak = 0
  if work.max_new_tokens:
    prompts = -(-work.prompts // batch_shards)
    if work.prompts % batch_shards:
      notes.append(f"{work.prompts} prompts over {batch_shards} batch shards: {prompts} per device")
    samp = sampler_bytes(mc, prompts, work.samples, work.prompt_len, work.max_new_tokens, tensor)
    components.update(kv_cache=samp["kv_cache"], sampler_working=samp["decode_state"] + samp["working"])
    rollout_peak = resident + samp["kv_cache"] + samp["decode_state"] + samp["working"]
  peak = max(train_peak, rollout_peak)
  return {
      "model": config.model.name, "topology": topology, "mesh": mesh_shape, "device_bytes": device_bytes,
      "workload": dataclasses.asdict(work) | {"rows_per_device": rows},
      "dtypes": {"params": mc.param_dtype, "compute": mc.dtype}, "remat": mc.remat,
      "components": components, "activation_detail": act, "train_peak": train_peak,
      "rollout_peak": rollout_peak, "peak": peak, "fits": peak <= device_bytes, "margin": device_bytes - peak,
      "notes": notes,
      # The fastest update split whose train peak (and the rollout's) fits FIT_HEADROOM of the device.
      "fitting_split": (fit_update_split(lambda m, c: peak_of(num_micro_batches=m, logits_chunk=c), work.rows,
                                         FIT_HEADROOM * device_bytes)
                        if rollout_peak <= FIT_HEADROOM * device_bytes else None),
  }


def format_bytes(b: float) -> str:
  """1.5 * 2**30 -> '1.50 GiB' (MiB below 1 GiB)."""
  return f"{b / GiB:.2f} GiB" if abs(b) >= GiB else f"{b / (1 << 20):.2f} MiB"


def format_plan(p: dict) -> str:
  """A human-readable table of a `plan` result."""
  gib = lambda b: f"{format_bytes(b):>14s}"  # pylint: disable=unnecessary-lambda-assignment
  w = p["workload"]
  mesh = ", ".join(f"{k}={v}" for k, v in p["mesh"].items())
  lines = [f"{p['model']} on {p['topology']} (mesh {mesh}), {p['dtypes']['params']} params, "
           f"{p['dtypes']['compute']} compute, remat={p['remat']}",
           f"{w['stage']}: {w['rows']} rows x T={w['seq_len']} in {w['num_micro_batches']} micro-batches "
           f"(per device: {w['rows_per_device']}), logits chunk {w['logits_chunk'] or 'none'}",
           f"{'component':18s} {'per device':>14s}"]
  for name, b in p["components"].items():
    lines.append(f"  {name:16s} {gib(b)}")
  lines.append(f"  {'train peak':16s} {gib(p['train_peak'])}")
  if p["rollout_peak"]:
    lines.append(f"  {'rollout peak':16s} {gib(p['rollout_peak'])}")
  lines.append(f"  {'device memory':16s} {gib(p['device_bytes'])}")
  if p["fits"]:
    lines.append(f"fits: {format_bytes(p['peak'])} peak, {format_bytes(p['margin'])} left")
  else:
    lines.append(f"does not fit by {format_bytes(-p['margin'])}")
  if p["fitting_split"] and p["fitting_split"] != (w["num_micro_batches"], w["logits_chunk"]):
    m, c = p["fitting_split"]
    lines.append(f"within {FIT_HEADROOM:.0%} of the device: num_micro_batches={m}, logits_chunk_size={c}")
  elif p["fitting_split"] is None:
    lines.append(f"no micro-batch / logits-chunk split fits {FIT_HEADROOM:.0%} of the device: shard the model "
                 "(mesh fsdp/tensor), or fewer rows or tokens")
  lines += [f"note: {n}" for n in p["notes"]]
  return "\n".join(lines)


def _define_flags() -> dict:
  """The command-line flags, defined only when this module is the program: r1.main defines a
  --config flag too, and both modules may be imported in one process (the tests)."""
  return {"config": config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True),
          "mesh": flags.DEFINE_string("mesh", None, "Mesh shape, e.g. data=2,fsdp=4 (default: config.mesh.shape)."),
          "topology": flags.DEFINE_string("topology", "cpu-1", "v5p-1024, v6e-256, v5e-16, v4-32 or cpu-<devices>."),
          "json_out": flags.DEFINE_string("json_out", None, "Also write the plan as JSON here.")}


_FLAGS = {}


def parse_mesh(text: str) -> dict[str, int]:
  """'data=2,fsdp=-1' -> {"data": 2, "fsdp": -1}."""
  out = {}
  for item in filter(None, text.split(",")):
    name, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--mesh item {item!r}: expected axis=size")
    out[name.strip()] = int(value)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config, mesh, topology, json_out = (_FLAGS[k].value for k in ("config", "mesh", "topology", "json_out"))
  if config is None:
    raise app.UsageError("--config is required")
  p = plan(config, parse_mesh(mesh) if mesh else None, topology)
  print(format_plan(p))
  if json_out:
    with open(json_out, "w") as f:
      json.dump(p, f, indent=2)


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
