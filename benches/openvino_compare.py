#!/usr/bin/env python3
"""Dev-only comparison (never run by CI, never a dependency of the project): closed-loop
throughput of OpenVINO GenAI's ContinuousBatchingPipeline, in-process on the CPU, on the decode
bench's synthetic model, to set beside `cargo bench --bench loadgen` against our daemon (issue 15).

Mirrors the HTTP load generator: `concurrency` requests always in flight, each request is
exactly --prompt-tokens token ids and produces exactly --output-tokens tokens (greedy,
ignore_eos); the first --warmup requests of each concurrency level are not counted.
Output tok/s = output tokens of counted requests / wall time (first counted add -> last counted
finish). TTFT = add_request -> first generated token visible on the handle (read after each
pipe.step(), so as fine as one step). TPOT = (finish - first token) / (output_tokens - 1).
No HTTP, JSON or tokenizer in this loop (ours has all three).

Setup (2026-12, openvino 2026.4.1, openvino-genai 2026.4.1.0, optimum-intel 2.2.0; the machine
reaches PyPI only, whose torch wheel is CUDA-linked: torch is installed without the nvidia
packages it does not need to import, no GPU is used):
    python3 -m venv venv && . venv/bin/activate
    pip install --dry-run --report r.json openvino-genai openvino-tokenizers \
        'optimum-intel[openvino]' torch          # resolve once, then install without
    # the nvidia-*/cuda-*/triton packages except the runtime libraries `import torch` loads
    # (cudart, cupti, nvrtc, cublas, cufft, cufile, cusparse, nvjitlink, cusparselt, nccl,
    # nvshmem, cudnn), each with `pip install --no-deps`
    cargo bench --bench decode -- model          # writes target/bench-models/qwen2-0.5b-bf16
    cp -r target/bench-models/qwen2-0.5b-bf16 hf-model
    optimum-cli export openvino --model hf-model --task text-generation-with-past \
        --weight-format fp16 ov-model             # no bf16 choice; compiled to bf16 on AMX
Run (OpenVINO's CPU default stores the KV cache as u8; --kv-cache-precision bf16 keeps bf16):
    OPENVINO_TELEMETRY_DISABLE=1 python benches/openvino_compare.py --model ov-model \
        --concurrency 1,16 [--kv-cache-precision bf16]
"""
import argparse
import sys
import time

import numpy as np
import openvino as ov
import openvino_genai as ov_genai


def pct(values, p):
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), p, method="linear"))


def make_prompt(req_index, n_tokens, lo=100, hi=1900):
    # Deterministic, different per request, ordinary (non-special) ids in [lo, hi].
    rng = np.random.default_rng(12345 + req_index)
    return rng.integers(lo, hi + 1, size=(1, n_tokens), dtype=np.int64)


def parse_props(items):
    props = {}
    for it in items or []:
        k, _, v = it.partition("=")
        if not _:
            sys.exit(f"--ov-prop expects KEY=VALUE, got {it!r}")
        props[k] = int(v) if v.lstrip("-").isdigit() else v
    return props


def run_level(pipe, conc, args, next_req_id):
    """Closed loop at one concurrency level. Returns (stats dict, next_req_id)."""
    gen_cfg = ov_genai.GenerationConfig()
    gen_cfg.max_new_tokens = args.output_tokens
    gen_cfg.min_new_tokens = args.output_tokens
    gen_cfg.ignore_eos = True
    gen_cfg.do_sample = False  # greedy

    total = args.requests + args.warmup
    # per local request index i: dict(add, first, done, ntok, handle, counted)
    reqs = {}
    inflight = {}  # request_id -> local index
    issued = 0
    done = 0

    def add_one():
        nonlocal issued, next_req_id
        i = issued
        rid = next_req_id
        next_req_id += 1
        ids = ov.Tensor(make_prompt(rid, args.prompt_tokens))
        t = time.perf_counter()
        h = pipe.add_request(rid, ids, gen_cfg)
        reqs[i] = dict(add=t, first=None, done=None, ntok=0, handle=h, counted=i >= args.warmup)
        inflight[rid] = i
        issued += 1

    while issued < min(conc, total):
        add_one()

    steps = 0
    while done < total:
        if not pipe.has_non_finished_requests():
            raise RuntimeError("pipeline idle but requests outstanding")
        pipe.step()
        steps += 1
        now = time.perf_counter()
        finished_now = []
        for rid, i in inflight.items():
            r = reqs[i]
            h = r["handle"]
            # read() blocks when nothing is queued -> guard with can_read(); drain every queued chunk.
            while h.can_read():
                outs = h.read()
                for out in outs.values():
                    n = len(out.generated_ids)
                    if n and r["first"] is None:
                        r["first"] = now
                    r["ntok"] += n
            st = h.get_status()
            if st == ov_genai.GenerationStatus.RUNNING:
                continue
            if st != ov_genai.GenerationStatus.FINISHED:
                raise RuntimeError(f"request {rid} ended with status {st}")
            r["done"] = now
            finished_now.append(rid)
        for rid in finished_now:
            i = inflight.pop(rid)
            r = reqs[i]
            if r["ntok"] != args.output_tokens:
                raise RuntimeError(f"request {rid}: got {r['ntok']} tokens, expected {args.output_tokens}")
            r["handle"] = None
            done += 1
            if issued < total:
                add_one()  # closed loop: replace the finished request immediately

    counted = [r for r in reqs.values() if r["counted"]]
    t0 = min(r["add"] for r in counted)
    t1 = max(r["done"] for r in counted)
    wall = t1 - t0
    out_tokens = sum(r["ntok"] for r in counted)
    ttft = [(r["first"] - r["add"]) * 1e3 for r in counted]
    tpot = [
        (r["done"] - r["first"]) * 1e3 / (r["ntok"] - 1) for r in counted if r["ntok"] > 1
    ]
    return dict(
        conc=conc, reqs=len(counted), wall=wall, out_tokens=out_tokens,
        tok_s=out_tokens / wall if wall > 0 else float("nan"),
        ttft_p50=pct(ttft, 50), ttft_p99=pct(ttft, 99), tpot_p50=pct(tpot, 50), steps=steps,
    ), next_req_id


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="OpenVINO IR folder (optimum-cli export openvino output)")
    ap.add_argument("--concurrency", default="1,16", help="comma-separated list, e.g. 1,4,16")
    ap.add_argument("--requests", type=int, default=32, help="counted requests per concurrency level")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2, help="uncounted leading requests per level")
    ap.add_argument("--threads", type=int, default=2, help="INFERENCE_NUM_THREADS")
    ap.add_argument("--cache-gb", type=int, default=2, help="SchedulerConfig.cache_size (GB of KV cache)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--no-dynamic-split-fuse", action="store_true")
    ap.add_argument("--kv-cache-precision", default=None,
                    help="override KV_CACHE_PRECISION (e.g. bf16, f16, u8). Default: OpenVINO's CPU default")
    ap.add_argument("--inference-precision", default=None,
                    help="override INFERENCE_PRECISION_HINT (e.g. f32). Default: OpenVINO's CPU default")
    ap.add_argument("--ov-prop", action="append", metavar="KEY=VALUE", help="extra CPU plugin property")
    args = ap.parse_args()
    concs = [int(c) for c in args.concurrency.split(",") if c.strip()]

    core = ov.Core()

    def q(k):
        try:
            return str(core.get_property("CPU", k))
        except Exception:
            return "n/a"

    props = {"INFERENCE_NUM_THREADS": args.threads}
    if args.kv_cache_precision:
        props["KV_CACHE_PRECISION"] = args.kv_cache_precision
    if args.inference_precision:
        props["INFERENCE_PRECISION_HINT"] = args.inference_precision
    props.update(parse_props(args.ov_prop))

    sc = ov_genai.SchedulerConfig()
    sc.cache_size = args.cache_gb
    sc.max_num_batched_tokens = args.max_num_batched_tokens
    sc.dynamic_split_fuse = not args.no_dynamic_split_fuse
    sc.enable_prefix_caching = False

    print(f"openvino {ov.__version__} | openvino-genai {ov_genai.__version__} | CPU: {q('FULL_DEVICE_NAME')}")
    print(f"CPU plugin defaults: INFERENCE_PRECISION_HINT={q('INFERENCE_PRECISION_HINT')} "
          f"KV_CACHE_PRECISION={q('KV_CACHE_PRECISION')} KEY_CACHE_PRECISION={q('KEY_CACHE_PRECISION')} "
          f"VALUE_CACHE_PRECISION={q('VALUE_CACHE_PRECISION')} PERFORMANCE_HINT={q('PERFORMANCE_HINT')} "
          f"DYNAMIC_QUANTIZATION_GROUP_SIZE={q('DYNAMIC_QUANTIZATION_GROUP_SIZE')}")
    print(f"properties passed: {props}  (anything not listed = default above)")
    print(f"scheduler: cache_size={sc.cache_size}GB max_num_batched_tokens={sc.max_num_batched_tokens} "
          f"dynamic_split_fuse={sc.dynamic_split_fuse} max_num_seqs={sc.max_num_seqs} "
          f"enable_prefix_caching={sc.enable_prefix_caching}")
    print(f"workload: prompt {args.prompt_tokens} tok, output {args.output_tokens} tok (ignore_eos, greedy), "
          f"{args.requests} counted + {args.warmup} warmup requests per level, concurrency {concs}")
    sys.stdout.flush()

    t = time.perf_counter()
    pipe = ov_genai.ContinuousBatchingPipeline(args.model, sc, "CPU", props)
    print(f"pipeline built in {time.perf_counter() - t:.1f} s")
    sys.stdout.flush()

    next_id = 0
    results = []
    for conc in concs:
        res, next_id = run_level(pipe, conc, args, next_id)
        results.append(res)
        m = pipe.get_metrics()
        extra = ""
        try:
            extra = (f" [steps {res['steps']}, wall {res['wall']:.2f} s, max KV cache usage "
                     f"{m.max_cache_usage:.1f}%, KV cache {m.kv_cache_size_in_bytes / 2**20:.0f} MiB]")
        except Exception:
            pass
        print(f"conc {res['conc']}: {res['reqs']} reqs, out tok/s {res['tok_s']:.1f}, "
              f"TTFT p50 {res['ttft_p50']:.0f} ms p99 {res['ttft_p99']:.0f} ms, "
              f"TPOT p50 {res['tpot_p50']:.1f} ms{extra}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
