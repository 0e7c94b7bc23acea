#!/usr/bin/env python3
"""Generates the reference increments that pin the torchsde port (core/engine/src/sampling/torchsde.rs).

A1111 v1.10.1 gives its SDE samplers (DPM++ SDE, DPM++ 2M SDE [Heun], DPM++ 3M SDE) the noise of
k-diffusion's `BrownianTreeNoiseSampler`: one torchsde 0.2.6 `BrownianTree` per image seed, with
torchsde's internal normal generator replaced by A1111's `randn_local` (modules/sd_samplers_common.py,
`replace_torchsde_browinan`). This script builds exactly that stack (the real torchsde and the real
k-diffusion noise sampler and samplers, A1111's `_randn` replacement, the NV and CPU random sources),
runs the samplers with a dummy model, records every `noise_sampler(sigma, sigma_next)` call, and
writes queries and results to ONE file:

    core/engine/tests/data/brownian-refs.safetensors

which the tests in `core/engine/src/sampling/torchsde.rs` replay. CI needs no Python; only
regenerating the file does.

Environment (Python 3.11; torch 2.1.2 is A1111 v1.10.1's default; PyPI's x86_64 torch wheel needs
the NVIDIA runtime wheels just to import, even on a CPU-only machine):

    python3 -m venv /tmp/venv-sde
    /tmp/venv-sde/bin/pip install numpy==1.26.2 torch==2.1.2 torchsde==0.2.6 trampoline==0.1.2 \
        scipy==1.11.4 torchdiffeq==0.2.3 tqdm safetensors==0.4.2
    /tmp/venv-sde/bin/pip install --no-deps k-diffusion==0.1.1.post1
    /tmp/venv-sde/bin/python scripts/gen-brownian-refs.py        # from the repository root

k-diffusion's package `__init__` imports its training code (torchvision, clean-fid, ...), so only
`k_diffusion/sampling.py` (with `external.py`) is loaded by scripts/refgen_common.py, under a stub package whose `utils` holds the one helper the
samplers use (`append_dims`). A1111 pins k-diffusion commit ab527a9a; its `BatchedBrownianTree`,
`BrownianTreeNoiseSampler` and DPM++ SDE samplers are identical to 0.1.1.post1's.

The output is deterministic (fixed seeds and schedules, no wall-clock input, a safetensors writer
with a sorted header): re-running with the same library versions gives the same bytes. The CPU
source's `torch.randn` for 16 or more elements depends on the CPU kernel torch dispatches to
(ATEN_CPU_CAPABILITY: the AVX2 and AVX-512 kernels agree, the non-vectorised "default" one does
not), so the kernel is recorded in `__metadata__` with the versions; the committed file was made
with the AVX-512 kernel.

Layout (all little-endian; `N` = case number, 3 digits):

    meta.cases           I64 [1]       number of cases (the test checks it)
    case.N.seeds         I64 [B]       the batch's image seeds (`p.all_seeds[...]`)
    case.N.config        I64 [2]       [random source (0 = NV, 1 = CPU), numel of one image]
    case.N.range         F32 [2]       sigma_min, sigma_max given to the noise sampler (float32, as
                                       A1111's `sigmas[sigmas > 0].min()`, `sigmas.max()`)
    case.N.queries       F32 [Q, 2]    (sigma, sigma_next) of each noise_sampler call, in call order
    case.N.scale         F32 [Q]       the noise sampler's divisor `(sigma_next - sigma).abs().sqrt()`
    case.N.w             F32 [Q, B, n] `BatchedBrownianTree(sigma, sigma_next)`: the signed increments
    case.N.noise         F32 [Q, B, n] the noise sampler's output, w / scale
    round.input          F64 [R]       values given to torchsde's `_round` (Python `round(x, 6)`)
    round.output         F64 [R]
    seedseq.entropy      I64 [S]       numpy SeedSequence(entropy, spawn_key=(key, depth), pool_size=24)
    seedseq.spawn        I64 [S, 3]    [has spawn key (0/1), key, depth]
    seedseq.state        U32 [S, 4]    .generate_state(4)

`__metadata__` holds each case's description (`case.N`: sampler, schedule, steps) and the versions.
"""

import os
import platform
import random

import numpy as np
import torch
import torchsde
import torchsde._brownian.brownian_interval as brownian_interval

from refgen_common import load_k_diffusion, philox_randn, write_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "core/engine/tests/data/brownian-refs.safetensors")

# ---------------------------------------------------------------------------------------------
# A1111's random sources (modules/rng.py `randn_local`; NV: modules/rng_philox.py in refgen_common).

SOURCE = {"name": "NV"}


def randn_local(seed, shape):
    if SOURCE["name"] == "NV":
        return torch.asarray(philox_randn(seed, shape), device="cpu")
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, device="cpu", generator=generator)


# A1111 replace_torchsde_browinan(): every tree node's noise is the first draw of a fresh generator.
brownian_interval._randn = lambda size, dtype, device, seed: randn_local(seed, size).to(device=device, dtype=dtype)

# ---------------------------------------------------------------------------------------------
# k-diffusion's samplers (refgen_common.load_k_diffusion).

K, _ = load_k_diffusion()

# ---------------------------------------------------------------------------------------------
# Schedules as A1111 builds them (modules/sd_samplers_kdiffusion.py get_sigmas).


def model_sigma_range():
    """SD 1.x/2.x/XL model sigmas (scaled_linear betas 0.00085..0.012): float32 min and max."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return sigmas[0].item(), sigmas[-1].item()


SIGMA_MIN, SIGMA_MAX = model_sigma_range()


def schedule(kind, steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, discard_next_to_last=False):
    if discard_next_to_last:
        steps += 1
    if kind == "karras":
        sigmas = K.get_sigmas_karras(n=steps, sigma_min=sigma_min, sigma_max=sigma_max, device="cpu")
    else:
        sigmas = K.get_sigmas_exponential(n=steps, sigma_min=sigma_min, sigma_max=sigma_max, device="cpu")
    if discard_next_to_last:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()


def dummy_model(x, sigma, **_):
    """Any smooth denoiser will do: the noise queries depend on the sigmas only."""
    return x / (1 + K.utils.append_dims(sigma, x.ndim) ** 2)


# ---------------------------------------------------------------------------------------------
# Recording.


def make_sampler(x, sigmas_full, seeds):
    """A1111 create_noise_sampler: the tree spans the FULL schedule, whatever part is sampled."""
    sigma_min, sigma_max = sigmas_full[sigmas_full > 0].min(), sigmas_full.max()
    ns = K.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seeds)
    rec = {"range": [sigma_min.item(), sigma_max.item()], "queries": [], "scale": [], "w": [], "noise": []}
    assert sigma_min.dtype == torch.float32 and sigma_max.dtype == torch.float32
    tree = ns.tree
    last_w = []

    def tree_call(t0, t1):
        w = tree(t0, t1)
        last_w.append(w.clone())
        return w

    ns.tree = tree_call

    def noise_sampler(sigma, sigma_next):
        sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        assert sigma.dtype == torch.float32 and sigma_next.dtype == torch.float32, (sigma, sigma_next)
        out = ns(sigma, sigma_next)
        # The noise sampler's divisor, computed as it does (torch's CPU float32 sqrt is MKL's
        # vsSqrt, which is not always correctly rounded).
        scale = (sigma_next - sigma).abs().sqrt()
        w = last_w[-1]
        assert torch.equal(out, w / scale), "the noise is the increment divided by the scale"
        rec["queries"].append([sigma.item(), sigma_next.item()])
        rec["scale"].append(scale.item())
        rec["w"].append(last_w.pop().reshape(len(seeds), -1).numpy())
        rec["noise"].append(out.reshape(len(seeds), -1).numpy())
        return out

    return noise_sampler, rec


def run_sampler(name, seeds, shape, sigmas_full, sigmas_run):
    x = torch.zeros((len(seeds), *shape), dtype=torch.float32)
    noise_sampler, rec = make_sampler(x, sigmas_full, seeds)
    x = x + torch.linspace(-1, 1, x.numel()).reshape(x.shape) * sigmas_run[0]
    kwargs = {"noise_sampler": noise_sampler, "disable": True}
    if name == "dpmpp_sde":
        K.sample_dpmpp_sde(dummy_model, x, sigmas_run, **kwargs)
    elif name == "dpmpp_2m_sde":
        K.sample_dpmpp_2m_sde(dummy_model, x, sigmas_run, **kwargs)
    elif name == "dpmpp_2m_sde_heun":
        K.sample_dpmpp_2m_sde(dummy_model, x, sigmas_run, solver_type="heun", **kwargs)
    elif name == "dpmpp_3m_sde":
        K.sample_dpmpp_3m_sde(dummy_model, x, sigmas_run, **kwargs)
    else:
        raise ValueError(name)
    return rec


def run_queries(seeds, shape, sigma_range, queries):
    """Direct noise_sampler calls (any order, out-of-range and ascending ones included)."""
    x = torch.zeros((len(seeds), *shape), dtype=torch.float32)
    full = torch.tensor([sigma_range[1], sigma_range[0], 0.0], dtype=torch.float32)
    noise_sampler, rec = make_sampler(x, full, seeds)
    for a, b in queries:
        noise_sampler(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    return rec


def random_queries(rng, lo, hi, count):
    out = []
    for i in range(count):
        a, b = rng.uniform(lo * 0.9, hi * 1.02), rng.uniform(lo * 0.9, hi * 1.02)
        if i % 7 == 3:  # short intervals, a few tolerances long
            b = a + rng.choice([1, -1]) * rng.uniform(3e-6, 1e-4)
        # torchsde clamps to its (rounded) range, then fails (RecursionError) on a non-empty interval
        # shorter than its tolerance: leave those out.
        start, end = round(float(np.float32(lo)), 6), round(float(np.float32(hi)), 6)
        ta, tb = sorted(min(max(float(np.float32(t)), start), end) for t in (a, b))
        if np.float32(a) == np.float32(b) or (ta != tb and round(ta, 6) == round(tb, 6)):
            continue  # (an empty query gives 0 / 0)
        out.append((a, b))
    return out


CASES = []


def case(desc, source, seeds, shape, rec):
    CASES.append({"desc": desc, "source": source, "seeds": seeds, "numel": int(np.prod(shape)), "rec": rec})


def build_cases():
    rng = random.Random(20240601)
    runs = [
        # (sampler, source, seeds, latent shape of one image, schedule kind, steps, extra)
        ("dpmpp_sde", "NV", [1234], (4, 4, 4), "karras", 10, {}),
        ("dpmpp_sde", "CPU", [1234, 1235, 1236], (4, 3, 3), "karras", 8, {}),
        ("dpmpp_sde", "CPU", [7], (4, 1, 3), "karras", 6, {}),
        ("dpmpp_2m_sde", "NV", [0], (4, 2, 2), "exponential", 12, {}),
        ("dpmpp_2m_sde", "NV", [3, 4, 5], (4, 1, 2), "karras", 9, {}),
        ("dpmpp_2m_sde_heun", "CPU", [2**32 + 7], (4, 1, 2), "exponential", 10, {}),
        ("dpmpp_3m_sde", "NV", [4294967295, 3, 99], (4, 1, 3), "exponential", 10, {"discard": True}),
        ("dpmpp_3m_sde", "CPU", [2**62 + 12345], (4, 2, 2), "exponential", 7, {"discard": True}),
        ("dpmpp_2m_sde", "NV", [987654321], (4, 3, 3), "karras", 12, {"img2img": 0.5}),
        ("dpmpp_sde", "NV", [555, 2**40 + 1], (4, 1, 2), "karras", 7, {"img2img": 0.75}),
        ("dpmpp_sde", "NV", [31337], (4, 2, 2), "karras", 8, {"sigma_max": 4500.0}),
        ("dpmpp_2m_sde", "CPU", [2**63 - 1], (4, 1, 3), "karras", 8, {"sigma_max": 157.40723, "sigma_min": 0.002}),
    ]
    for sampler, source, seeds, shape, kind, steps, extra in runs:
        SOURCE["name"] = source
        smin, smax = extra.get("sigma_min", SIGMA_MIN), extra.get("sigma_max", SIGMA_MAX)
        full = schedule(kind, steps, smin, smax, extra.get("discard", False))
        run = full
        desc = f"{sampler} {kind} {steps} steps, sigma {smin:g}..{smax:g}"
        if "img2img" in extra:
            t_enc = int(min(extra["img2img"], 0.999) * steps)
            run = full[steps - t_enc - 1 :]
            desc += f", img2img denoising {extra['img2img']} (t_enc {t_enc})"
        case(desc, source, seeds, shape, run_sampler(sampler, seeds, shape, full, run))

    # Direct queries: random order, both directions, some outside [sigma_min, sigma_max] (torchsde
    # clamps them with a warning), some only a few tolerances long.
    for source, seeds, shape, lo, hi, count in [
        ("NV", [42, 43], (4, 1, 2), SIGMA_MIN, SIGMA_MAX, 40),
        ("CPU", [42], (4, 1, 2), SIGMA_MIN, SIGMA_MAX, 30),
        ("CPU", [2**31 - 1, 0], (4, 3, 3), SIGMA_MIN, SIGMA_MAX, 20),
        ("NV", [11, 12, 13], (4, 1, 3), 0.1, 1000.0, 25),
        ("NV", [2**33 + 5], (4, 1, 1), 0.03, 5000.0, 25),
    ]:
        SOURCE["name"] = source
        qs = random_queries(rng, lo, hi, count)
        # Repeat a few earlier queries at the end: the tree's cache and search start then differ.
        qs += [qs[1], qs[0], qs[len(qs) // 2]]
        lo32, hi32 = float(np.float32(lo)), float(np.float32(hi))
        desc = f"direct queries, sigma {lo32:g}..{hi32:g}"
        case(desc, source, seeds, shape, run_queries(seeds, shape, (lo32, hi32), qs))

    # A degenerate range (sigma_min == sigma_max, e.g. one positive sigma): every query clamps to a
    # zero-length interval, so w = 0, and BatchedBrownianTree's sign is -1.
    SOURCE["name"] = "NV"
    case("degenerate range 1.5..1.5", "NV", [5], (4, 1, 2), run_queries([5], (4, 1, 2), (1.5, 1.5), [(2.0, 0.5), (0.5, 2.0)]))


def round_refs():
    rng = random.Random(7)
    xs = []
    for _ in range(600):
        xs.append(rng.uniform(0, 20))
        xs.append(float(np.float32(rng.uniform(0.01, 15))))
        e = rng.randint(-30, 12)
        xs.append(rng.random() * 2.0**e)
    # Exact decimal ties (dyadic values with 7 decimals ending in 5) and midpoints of rounded values.
    for k in range(1, 200):
        xs.append(k / 128.0)
        xs.append(k * 5 / 2**21)
        a, b = round(rng.uniform(0, 15), 6), round(rng.uniform(0, 15), 6)
        xs.append(0.5 * (a + b))
    xs += [0.0, 1e-7, 4.9999999e-7, 5e-7, 5.0000001e-7, 1.5e-6, 2.5e-6, 1e9 + 0.5e-6, 123456.0000005]
    return np.array(xs, dtype=np.float64), np.array([round(x, 6) for x in xs], dtype=np.float64)


def seedseq_refs():
    rows = []
    for entropy in [0, 1, 1234, 2**32 - 1, 2**32, 2**32 + 5, 2**62 + 12345, 2**63 - 1]:
        rows.append((entropy, None))
        for key, depth in [(0, 0), (1, 1), (5, 3), (2**32 - 1, 32), (2**32, 33), (2**40 + 3, 41)]:
            rows.append((entropy, (key, depth)))
    ent, spawn, state = [], [], []
    for entropy, sk in rows:
        if sk is None:
            seq = np.random.SeedSequence(entropy=entropy, pool_size=24)
            spawn.append([0, 0, 0])
        else:
            seq = np.random.SeedSequence(entropy=entropy, spawn_key=sk, pool_size=24)
            spawn.append([1, sk[0], sk[1]])
        ent.append(entropy)
        state.append(seq.generate_state(4))
    return np.array(ent, dtype=np.int64), np.array(spawn, dtype=np.int64), np.array(state, dtype=np.uint32)


def main():
    import warnings

    warnings.simplefilter("ignore")  # torchsde warns on every clamped query
    torch.manual_seed(0)
    build_cases()
    tensors = {"meta.cases": np.array([len(CASES)], dtype=np.int64)}
    metadata = {
        "generator": "scripts/gen-brownian-refs.py",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, torchsde {torchsde.__version__}, "
        f"numpy {np.__version__}, k-diffusion 0.1.1.post1",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    for i, c in enumerate(CASES):
        p, rec = f"case.{i:03d}", c["rec"]
        tensors[p + ".seeds"] = np.array(c["seeds"], dtype=np.int64)
        tensors[p + ".config"] = np.array([0 if c["source"] == "NV" else 1, c["numel"]], dtype=np.int64)
        tensors[p + ".range"] = np.array(rec["range"], dtype=np.float32)
        tensors[p + ".queries"] = np.array(rec["queries"], dtype=np.float32).reshape(-1, 2)
        tensors[p + ".scale"] = np.array(rec["scale"], dtype=np.float32)
        tensors[p + ".w"] = np.stack(rec["w"]).astype(np.float32)
        tensors[p + ".noise"] = np.stack(rec["noise"]).astype(np.float32)
        metadata[p] = f"{c['source']}, batch {len(c['seeds'])}, numel {c['numel']}: {c['desc']}"
    tensors["round.input"], tensors["round.output"] = round_refs()
    tensors["seedseq.entropy"], tensors["seedseq.spawn"], tensors["seedseq.state"] = seedseq_refs()
    write_safetensors(OUT, tensors, metadata)

    # Read back with the safetensors library.
    from safetensors.numpy import load_file

    back = load_file(OUT)
    assert set(back) == set(tensors) and all(np.array_equal(back[k], tensors[k], equal_nan=True) for k in tensors)
    queries = sum(len(c["rec"]["queries"]) for c in CASES)
    print(f"{OUT}: {len(CASES)} cases, {queries} queries, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
