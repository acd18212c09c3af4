"""benchmarks/throughput.py and benchmarks/gpu_check.sh, on the CPU at small sizes: the FLOP
formula behind MFU agrees with XLA's own count, and the GPU check runs end to end."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ablations  # noqa: E402
import gpu_hlo  # noqa: E402
import hlo_bytes  # noqa: E402
import mfu  # noqa: E402
import throughput  # noqa: E402
import throughput_jaxft  # noqa: E402

BERT = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=1024)  # fmt: skip
T5 = dict(vocab_size=1000, d_model=256, d_kv=64, d_ff=1024, num_layers=2, num_decoder_layers=2,
          num_heads=4)  # fmt: skip


def xla_step_flops(arch, shape, dims, strategy):
    from jaxft.train import step

    settings = ablations.jaxft_settings("default", "float32")
    model, state, tx = throughput_jaxft.build_jaxft(arch, shape, strategy, settings)
    batch = throughput_jaxft.numpy_batch(arch, dims, shape["vocab_size"])
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    train_step = step.make_train_step(model, tx, dropout_rng="rbg")
    compiled = jax.jit(train_step).lower(state, batch).compile()
    return throughput.xla_flops(compiled)


@pytest.mark.parametrize(
    "arch,strategy",
    [("bert", "full"), ("bert", "lora"), ("bert", "adapters"), ("bert", "frozen"), ("t5", "full")],
)
def test_model_flops_agree_with_xla(arch, strategy):
    """XLA also counts norms, softmax, GELU and AdamW, so it lands a little above the matmul
    count; a wrong factor (2x vs 3x, a forgotten decoder or LM head) lands far outside."""
    shape, dims = (BERT, (8, 64)) if arch == "bert" else (T5, (4, 64, 32))
    ours = mfu.model_flops(arch, shape, dims, strategy)
    xla = xla_step_flops(arch, shape, dims, strategy)
    assert 0.97 <= xla / ours <= 1.15, (xla, ours, xla / ours)


def test_rows_build_on_the_host_cpu_beside_an_accelerator(monkeypatch):
    """With an accelerator as default device, the state is built by CPU programs and then put on
    that device (here the CPU stands in for it: the default backend is patched)."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert throughput_jaxft.host_device() == jax.devices("cpu")[0]
    placed = []
    real_put = jax.device_put
    monkeypatch.setattr(jax, "device_put", lambda x, d: placed.append(d) or real_put(x, d))
    settings = ablations.jaxft_settings("default", "float32")
    _, state, _ = throughput_jaxft.build_jaxft("bert", BERT, "lora", settings)
    assert placed == [jax.devices()[0]]
    assert state.step == 0 and jax.tree.leaves(state.params)


def test_rows_of_one_kind_build_their_state_once_and_each_get_a_copy(monkeypatch):
    built = []
    real = throughput_jaxft._state
    monkeypatch.setattr(throughput_jaxft, "_built", {})
    monkeypatch.setattr(throughput_jaxft, "_state", lambda *a: built.append(a[1]) or real(*a))
    rows = [
        throughput_jaxft.build_jaxft("bert", BERT, "lora", ablations.jaxft_settings(v, "float32"))
        for v in ("default", "softmax_vjp", "scan")
    ]
    assert built == ["lora"]  # the kind's state, once
    _, again, _ = throughput_jaxft.build_jaxft("bert", BERT, "lora", ablations.jaxft_settings(
        "default", "bfloat16"))  # fmt: skip
    assert built == ["lora", "lora"]  # another dtype is another kind
    first, second = (jax.tree_util.tree_leaves(state.trainable) for _, state, _ in rows[:2])
    for a, b in zip(first, second, strict=True):
        assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()  # donating one keeps b
        np.testing.assert_array_equal(a, b)
    assert rows[2][0].config.scan_layers and not rows[0][0].config.scan_layers


SLICING_HLO = """HloModule m

%fused_slice (param_0.1: bf16[8,12], param_1.2: f32[4]) -> bf16[8,4] {
  %param_0.1 = bf16[8,12]{1,0} parameter(0)
  %bitcast.1 = bf16[8,12]{1,0} bitcast(%param_0.1)
  %slice.1 = bf16[8,4]{1,0} slice(%bitcast.1), slice={[0:8], [4:8]}
  %param_1.2 = f32[4]{0} parameter(1)
  %convert.1 = bf16[4]{0} convert(%param_1.2)
  %broadcast.1 = bf16[8,4]{1,0} broadcast(%convert.1), dimensions={1}
  ROOT %add.1 = bf16[8,4]{1,0} add(%slice.1, %broadcast.1)
}

ENTRY %main (p0: bf16[8,12], p1: f32[4]) -> bf16[8,4] {
  %p0 = bf16[8,12]{1,0} parameter(0)
  %p1 = f32[4]{0} parameter(1)
  ROOT %fusion.1 = bf16[8,4]{1,0} fusion(%p0, %p1), kind=kLoop, calls=%fused_slice
}
"""


def test_hlo_bytes_charges_a_fusion_that_slices_an_operand_for_the_slice_only():
    (kernel,) = hlo_bytes.entry_kernels(SLICING_HLO)
    # reads: the [8, 4] slice (64 B) of the [8, 12] operand, and the f32[4] bias (16 B);
    # writes: bf16[8, 4] (64 B)
    assert kernel["bytes"] == 64 + 16 + 64


SPLIT_K_HLO = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%fused_leaf (param_0.1: f32[2,8,12], param_1.2: f32[8,4]) -> f32[8,4] {
  %param_0.1 = f32[2,8,12]{2,1,0} parameter(0)
  %zero = f32[] constant(0)
  %reduce.1 = f32[8,12]{1,0} reduce(%param_0.1, %zero), dimensions={0}, to_apply=%add
  %slice.1 = f32[8,4]{1,0} slice(%reduce.1), slice={[0:8], [8:12]}
  %param_1.2 = f32[8,4]{1,0} parameter(1)
  ROOT %sub.1 = f32[8,4]{1,0} subtract(%param_1.2, %slice.1)
}

ENTRY %main (p0: f32[2,8,12], p1: f32[8,4]) -> f32[8,4] {
  %p0 = f32[2,8,12]{2,1,0} parameter(0)
  %p1 = f32[8,4]{1,0} parameter(1)
  ROOT %fusion.1 = f32[8,4]{1,0} fusion(%p0, %p1), kind=kLoop, calls=%fused_leaf
}
"""


def test_hlo_bytes_charges_a_sliced_sum_of_split_k_partials_for_the_slice_only():
    # the update of one leaf (a third) of a packed weight gradient that a split-K matmul left
    # as two partial sums: reads 2 x [8, 4] f32 of the partials (256 B), the leaf (128 B);
    # writes 128 B (until 2026-11-28 all of the partials, 768 B, were charged)
    (kernel,) = hlo_bytes.entry_kernels(SPLIT_K_HLO)
    assert kernel["bytes"] == 256 + 128 + 128


def test_hlo_bytes_counts_a_loop_body_once_per_trip_and_in_place_updates_at_their_size():
    def scanned(x):  # as scan_layers: 8 trips, each stacking its output into a [8, ...] buffer
        step = lambda c, _: (jnp.sin(c) * 2.0, jnp.sin(c) * 2.0)
        return jax.lax.scan(step, x, None, length=8)

    x = jnp.ones((1000, 100))
    kernels = hlo_bytes.entry_kernels(jax.jit(scanned).lower(x).compile().as_text())
    in_loop = [k for k in kernels if k["launches"] == 8]
    assert in_loop and all(k["launches"] in (1, 8) for k in kernels)
    stacking = [k for k in in_loop if "update" in k["name"] or "dynamic" in k["name"]]
    assert stacking, [k["name"] for k in in_loop]
    # each trip moves one [1000, 100] float32 slice (400 kB) in and out, not the 3.2 MB buffer
    assert all(k["bytes"] / 8 < 3 * x.nbytes for k in stacking)


# Lines as XLA prints them, some over the width ruff allows.
ASYNC_UPDATE_HLO = """HloModule m

%fused_update (param_0.1: bf16[12,64,32], param_1.1: s32[], param_2.1: bf16[64,32]) -> bf16[12,64,32] {
  %param_0.1 = bf16[12,64,32]{2,1,0} parameter(0)
  %param_2.1 = bf16[64,32]{1,0} parameter(2)
  %bitcast.1 = bf16[1,64,32]{2,1,0} bitcast(%param_2.1)
  %param_1.1 = s32[] parameter(1)
  %constant.1 = s32[] constant(0)
  ROOT %dynamic-update-slice.1 = bf16[12,64,32]{2,1,0} dynamic-update-slice(%param_0.1, %bitcast.1, %param_1.1, %constant.1, %constant.1)
}

ENTRY %main (p0: bf16[12,64,32], p1: s32[], p2: bf16[64,32]) -> bf16[12,64,32] {
  %p0 = bf16[12,64,32]{2,1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %p2 = bf16[64,32]{1,0} parameter(2)
  %fusion-start.1 = ((bf16[12,64,32]{2,1,0}, s32[], bf16[64,32]{1,0}), bf16[12,64,32]{2,1,0}, u32[]) fusion-start(%p0, %p1, %p2), kind=kLoop, calls=%fused_update
  ROOT %fusion-done.1 = bf16[12,64,32]{2,1,0} fusion-done(%fusion-start.1)
}
"""  # noqa: E501


def test_hlo_bytes_charges_an_async_fusion_once_at_its_start():
    # XLA 0.11 runs a scanned layer's stacking of its residuals as fusion-start/fusion-done:
    # one kernel, which moves the [64, 32] update (4 kB read, 4 kB written) and the index.
    (kernel,) = hlo_bytes.entry_kernels(ASYNC_UPDATE_HLO)
    assert kernel["op"] == "fusion-start"
    assert kernel["bytes"] == 4096 + 4 + 4096


CUSTOM_CALLS_HLO = """
ENTRY %main (p0: bf16[64,256], p1: bf16[256,64], p2: bf16[8,128,4,64], p3: bf16[8,128,4,64], p4: bf16[8,128,4,64], p5: bf16[8,128,12,64]) -> bf16[64,64] {
  %p0 = bf16[64,256]{1,0} parameter(0)
  %p1 = bf16[256,64]{1,0} parameter(1)
  %p2 = bf16[8,128,4,64]{3,2,1,0} parameter(2)
  %p3 = bf16[8,128,4,64]{3,2,1,0} parameter(3)
  %p4 = bf16[8,128,4,64]{3,2,1,0} parameter(4)
  %p5 = bf16[8,128,12,64]{3,2,1,0} parameter(5)
  %gemm.1 = (bf16[64,64]{1,0}, s8[1024]{0}) custom-call(%p0, %p1), custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{}}
  %fmha.1 = bf16[8,128,4,64]{3,2,1,0} custom-call(%p2, %p3, %p4), custom_call_target="__cudnn$fmhaSoftmaxDropoutBackward", backend_config={"cudnn_fmha_backend_config":{"bmm1_grad_gemm1_dot_dimension_numbers":{}}}
  %pallas.1 = bf16[8,128,4,64]{3,2,1,0} custom-call(%p5, %p5, %p5), custom_call_target="__gpu$xla.gpu.triton"
  ROOT %gte.1 = bf16[64,64]{1,0} get-tuple-element(%gemm.1), index=0
}
"""  # noqa: E501


def test_hlo_bytes_counts_cudnn_attention_outside_the_library_matmuls():
    # cuDNN's attention backward names its "gemm" dimension numbers in its backend config; it
    # is attention, not a matmul (until 2026-11-28 it was counted as one: 1.1 GB of the
    # BERT-base cudnn_dropout step left out)
    gemm, fmha, pallas = hlo_bytes.entry_kernels(CUSTOM_CALLS_HLO)
    assert gemm["matmul"] and not fmha["matmul"]
    assert fmha["bytes"] == 4 * 8 * 128 * 4 * 64 * 2
    # jaxft's flash kernel takes the packed queries, keys and values three times: one buffer,
    # read once (until 2026-11-28 it counted three times)
    assert not pallas["matmul"] and pallas["bytes"] == (12 + 4) * 8 * 128 * 64 * 2


def test_peak_flops_by_device_name():
    assert mfu.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16", 0) == 989e12
    assert mfu.peak_flops("NVIDIA H100 PCIe", "bfloat16", 0) == 756e12
    assert mfu.peak_flops("NVIDIA H100 NVL", "bfloat16", 0) == 835e12
    assert mfu.peak_flops("NVIDIA H200", "float32", 0) == 494e12
    assert mfu.peak_flops("x86_64 CPU (2 cores)", "float32", 0) is None
    assert mfu.peak_flops("x86_64 CPU (2 cores)", "float32", 1.5) == 1.5e12


def test_gpu_check_plans_the_target_rows_first_then_its_ablations_in_order():
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    rows = lambda name: re.search(rf"^{name}=(\S+)$", script, re.MULTILINE).group(1)
    assert "--t5_last" not in script  # t5:default places the T5 rows
    assert "--hf_strategies full,frozen,lora" in script
    parse = lambda items: throughput.parse(["--strategies", "full,frozen", "--hf_strategies",
                                            "full,frozen,lora", "--ablations", items])  # fmt: skip
    targets = [(r.framework, r.arch, r.strategy, r.variant)
               for r in throughput.plan(parse(rows("TARGET_ROWS")))]  # fmt: skip
    # the default run (under 6 minutes): every row a target names, and nothing else
    assert targets == [
        ("jaxft", "bert", "full", "default"),
        ("hf", "bert", "full", "eager"),
        ("jaxft", "bert", "frozen", "default"),
        ("hf", "bert", "frozen", "eager"),
        ("hf", "bert", "full", "compile"),
        ("jaxft", "bert", "lora", "default"),
        ("hf", "bert", "lora", "eager"),
        ("jaxft", "t5", "full", "default"),
        ("hf", "t5", "full", "eager"),
    ]
    # --long: the same, then the before/after rows in their order
    args = parse(rows("TARGET_ROWS") + "," + rows("DIAGNOSTIC_ROWS"))
    order = [(r.framework, r.arch, r.strategy, r.variant) for r in throughput.plan(args)]
    assert order[: len(targets)] == targets
    jaxft = [row[1:] for row in order if row[0] == "jaxft"]
    assert jaxft == [
        ("bert", "full", "default"),
        ("bert", "frozen", "default"),
        ("bert", "lora", "default"),
        ("t5", "full", "default"),
        ("bert", "full", "flash+no_triton_gemm"),
        ("bert", "full", "flash"),
        ("bert", "frozen", "flash+no_triton_gemm"),
        ("bert", "lora", "flash+no_triton_gemm"),
        ("bert", "frozen", "flash"),
        ("bert", "lora", "flash"),
        ("bert", "full", "cudnn_dropout"),
        ("bert", "full", "no_triton_gemm"),
        ("t5", "full", "cudnn_dropout"),
        ("bert", "frozen", "cudnn_dropout"),
        ("bert", "lora", "cudnn_dropout"),
        ("bert", "full", "cudnn_dropout+no_triton_gemm"),
        ("bert", "full", "block_masks"),
        ("bert", "full", "fusion_autotuner"),
        ("bert", "full", "autotune0"),
        ("bert", "frozen", "cudnn_dropout+no_dot_merger"),
        ("bert", "full", "cudnn_dropout+no_dot_merger"),
        ("t5", "full", "autodiff_bias+f32_head_loss"),
    ]
    assert ("hf", "t5", "full", "eager") in order and ("hf", "bert", "full", "compile") in order
    assert order.count(("hf", "t5", "full", "eager")) == 1
    assert order.count(("hf", "bert", "lora", "eager")) == 1
    # a strategy's rows asked for twice (the GPU preset's lora:default beside --strategies lora)
    # are planned once
    plain = throughput.plan(throughput.parse(["--preset", "gpu", "--ablations", "lora:default"]))
    assert [(r.framework, r.strategy) for r in plain].count(("jaxft", "lora")) == 1
    with pytest.raises(SystemExit, match="unknown ablation"):
        throughput.plan(throughput.parse(["--ablations", "frozen:fast"]))
    with pytest.raises(SystemExit, match="does not change a T5 step"):
        throughput.plan(throughput.parse(["--ablations", "t5:scan"]))
    with pytest.raises(SystemExit, match="unknown ablation 'fast'"):
        throughput.plan(throughput.parse(["--ablations", "scan+fast"]))


def test_a_variant_combines_ablations():
    settings = ablations.jaxft_settings("scan+cudnn_dropout+rbg", "bfloat16")
    assert settings["scan_layers"] and settings["dropout_rng"] == "rbg"
    assert settings["attention"] == "cudnn_dropout"
    assert ablations.jaxft_settings("default", "bfloat16") == ablations.jaxft_settings(
        "softmax_vjp", "bfloat16"
    )  # swapped while tracing, not a setting
    row = throughput.Row("jaxft", "bert", "full", "scan+cudnn_dropout", "tiny", (2, 8), "float32")
    assert throughput.hlo_name(row) == "bert_full_scan+cudnn_dropout"


@needs_torch
def test_gpu_check_runs_on_the_cpu(tmp_path):
    env = dict(
        os.environ,
        OUT=str(tmp_path),
        PYTHON=sys.executable,
        PARITY_SELECT="test_backbone_matches_hf and not roberta",
        THROUGHPUT_ARGS="--only bert --hf_strategies full,lora "
        "--ablations flax_dropout,lora:default,lora:flax_dropout,softmax_vjp,autotune0,"
        "scan+cudnn_dropout,fusion_autotuner",
        PROFILE="1",
    )
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--long", "--cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in (tmp_path / "parity.log").read_text()
    result = json.loads((tmp_path / "throughput.json").read_text())
    assert result["complete"]
    rows = {(r["framework"], r["strategy"], r["variant"]): r for r in result["rows"]}
    expected = {
        ("jaxft", "full", "default"),
        ("hf", "full", "eager"),
        ("jaxft", "frozen", "default"),
        ("jaxft", "lora", "default"),
        ("hf", "lora", "eager"),  # lora:default with lora among --hf_strategies
        ("jaxft", "full", "flax_dropout"),
        ("jaxft", "lora", "flax_dropout"),
        ("jaxft", "full", "softmax_vjp"),
        ("jaxft", "full", "autotune0"),
        ("jaxft", "full", "scan+cudnn_dropout"),
        ("jaxft", "full", "fusion_autotuner"),
    }
    assert set(rows) == expected
    assert all(r["samples_s"] > 0 and not r["error"] for r in rows.values())
    # each jaxft row splits its compile time: JAX's tracing and lowering, then XLA
    assert all(
        0 < r["lower_s"] < r["compile_s"] for r in rows.values() if r["framework"] == "jaxft"
    )
    ratios = {q["ratio"] for q in result["ratios"]}
    assert "bert full: jaxft / HF eager" in ratios
    assert "bert lora / bert full (jaxft)" in ratios
    assert "bert lora: jaxft / HF eager" in ratios
    assert "bert lora default / flax_dropout (jaxft)" in ratios
    assert "bert full scan+cudnn_dropout (jaxft) / HF eager" in ratios
    saved = hlo_bytes.main([str(tmp_path / "hlo_bert_full.txt.gz")])
    assert saved["memory_bound_bytes"] > 0
    assert (tmp_path / "throughput.md").read_text().startswith("# Train-step throughput")
    profile = json.loads((tmp_path / "profile" / "profile_bert_full_default.json").read_text())
    assert profile["total_us"] > 0 and profile["ops"]
    hlo = tmp_path / "profile" / "hlo_bert_full_default.txt"
    summary = hlo_bytes.main([str(hlo)])
    assert summary["memory_bound_bytes"] > 0
    assert any(k.startswith("bwd encoder/L/") for k in summary["groups"])


def test_gpu_check_names_an_unknown_option(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick"],
        env=dict(os.environ, OUT=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown option --quick (options: --long, --cpu)" in done.stdout


def test_gpu_hlo_names_what_it_needs_without_the_cuda_plugin():
    with pytest.raises(SystemExit, match="unknown ablation 'fast'"):
        gpu_hlo.main(["--variants", "default,fast"])
    try:
        import jax_plugins.xla_cuda12  # noqa: F401
    except ImportError:  # as in CI: one error that names the install
        with pytest.raises(SystemExit, match="jax-cuda12-plugin"):
            gpu_hlo.main(["--variants", "default"])


def test_gpu_hlo_phases_reads_xlas_timers_from_what_fd_2_received():
    # XLA logs from C++ straight to file descriptor 2, so the capture must work at that level.
    log_lines = [
        "I1127 05:28:44.476 9899 gpu_compiler.cc:2817] GpuCompiler::RunHloPasses for "
        "jit_train_step time: 6.53 s (6534862 us) (cumulative: 6.53 s, max: 6.53 s, #called: 1)",
        "I1127 05:28:44.477 9899 hlo_pass_pipeline.cc:176] HLO pass: priority-fusion time: "
        "4.2 s (4200000 us) (cumulative: 4.2 s, max: 4.2 s, #called: 1)",
        "I1127 05:28:44.478 9899 hlo_pass_pipeline.cc:176] HLO pass: cse time: 90 ms "
        "(90000 us) (cumulative: 90 ms, max: 90 ms, #called: 1)",
        "I1127 05:28:44.479 9899 hlo_pass_pipeline.cc:176] HLO pass: cse time: 10 ms "
        "(10000 us) (cumulative: 100 ms, max: 90 ms, #called: 2)",
        "I1127 05:28:44.480 9899 compile_module_to_llvm_ir.cc:263] GpuCompiler::RunBackend - "
        "IR emission for gemm_fusion_dot.185 time: 62.5 ms (62500 us) (cumulative: 62.5 ms, "
        "max: 62.5 ms, #called: 1)",
        "I1127 05:28:44.481 9899 xtile_compiler.cc:599] Shared memory usage: 768 B",
        "I1127 05:28:48.470 9899 xtile_compiler.cc:599] Shared memory usage: 12288 B",
        "I1127 05:28:48.475 9899 compile_module_to_llvm_ir.cc:263] GpuCompiler::RunBackend - "
        "IR emission for jit_train_step time: 500 ms (500000 us) (cumulative: 562 ms, max: "
        "500 ms, #called: 2)",
        "I1127 05:28:48.476 9899 gpu_compiler.cc:2817] GpuCompiler::RunBackend for "
        "jit_train_step time: 750 ms (750000 us) (cumulative: 750 ms, max: 750 ms, #called: 1)",
    ]
    with gpu_hlo.StderrCapture() as capture:
        os.write(2, ("\n".join(log_lines) + "\n").encode())
    phases = gpu_hlo.xla_phases(capture.log)
    assert phases["hlo_passes_s"] == pytest.approx(6.53)
    assert phases["backend_s"] == pytest.approx(0.75)
    assert list(phases["passes"]) == ["priority-fusion", "cse"]
    assert phases["passes"]["cse"] == pytest.approx(0.1)
    assert phases["ir_emission_s"] == pytest.approx(0.5)  # the step's module, not the matmul's
    assert phases["matmul_config_emissions"] == 1
    assert phases["matmul_config_s"] == pytest.approx(0.0625)
    assert phases["triton_kernels"] == 2
    # and the descriptor is the terminal's again
    with gpu_hlo.StderrCapture() as capture:
        pass
    assert capture.log == ""
    os.write(2, b"")  # writable again


def test_gpu_hlo_phases_refuses_to_run_after_jax_has_loaded():
    import jax  # noqa: F401  (XLA's logging is set up by now: the timers would not appear)

    with pytest.raises(SystemExit, match="before JAX loads"):
        gpu_hlo.main(["--variants", "default", "--phases"])


def test_a_rows_compile_options_follow_the_platform_of_its_state():
    from jax.sharding import SingleDeviceSharding

    cpu = jax.devices("cpu")[0]
    placed = {"w": jax.ShapeDtypeStruct((2,), "float32", sharding=SingleDeviceSharding(cpu))}
    assert ablations.platform(placed) == "cpu"
    assert ablations.platform({"w": jnp.ones(2)}) == "cpu"
    step = lambda state, batch: ({"w": state["w"] * batch}, {})
    for variant in ("default", "fusion_autotuner"):  # a GPU option compiles on the CPU too
        compiled = ablations.compile_step(step, placed, jnp.float32(2.0), variant)
        assert compiled({"w": jnp.ones(2)}, jnp.float32(2.0))[0]["w"].tolist() == [2.0, 2.0]


def test_alternate_times_variants_of_one_step_in_turn():
    import alternate

    args = "--preset tiny --variants default,plain_weight_grads --rounds 2 --warmup 1"
    results = alternate.main(args.split())
    assert [r["variant"] for r in results] == ["default", "plain_weight_grads"]
    assert all(r["ms"] > 0 and r["steps"] == 2 for r in results)
    with pytest.raises(SystemExit, match="two or more"):
        alternate.main(["--variants", "default"])


def test_block_masks_draws_a_hash_per_block_cut_at_static_offsets_as_the_library_did(
    monkeypatch,
):
    from jaxft.models import backend, bert, heads

    monkeypatch.setattr(backend, "on_gpu", lambda: True)  # where a model draws one bank

    config = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                             num_attention_heads=2, intermediate_size=32)  # fmt: skip
    model = bert.BertModel(config, head=heads.HeadConfig(num_labels=2))
    ids = jnp.ones((2, 8), jnp.int32)
    params = model.init(jax.random.key(0), ids)
    rngs = {"dropout": jax.random.key(1)}
    jaxpr = lambda: str(
        jax.make_jaxpr(lambda p: model.apply(p, ids, deterministic=False, rngs=rngs).logits)(params)
    )
    assert jaxpr().count("threefry2x32") == 1 and "dynamic_slice" in jaxpr()
    with ablations.block_masks(True):
        blocks = jaxpr()
    assert blocks.count("threefry2x32") == 3 + 2  # the layers, the embeddings, the head
    assert "dynamic_slice" not in blocks
    assert jaxpr().count("threefry2x32") == 1


def test_a_row_without_warmup_steps_is_timed(tmp_path):
    result = throughput.main(["--preset", "tiny", "--only", "bert", "--strategies", "frozen",
                              "--no_torch", "--ablations", "", "--warmup", "0", "--steps", "1",
                              "--out", str(tmp_path)])  # fmt: skip
    (row,) = result["rows"]
    assert not row["error"] and row["samples_s"] > 0
