"""Each fast path of minbert/fast.py equals the teaching path (attention.py, layer.py, model.py), in
outputs and in gradients, and transformers where it applies: SDPA, unpadding, skipping an all-ones
mask, and the torch.compile guards. Every test also checks, by counting calls, that the path it
means to test really ran."""
import pytest
import torch
import torch.nn.functional as F

from minbert import BertConfig, BertModel, fast
from minbert.attention import SelfAttention, extended_attention_mask
from minbert.layer import BertLayer
from minbert.safetensors import load_safetensors
from reference import DEVICES, FIXTURES, HAVE_TRANSFORMERS, TINY, hf_model_from, tiny_inputs
from reference import no_tf32  # noqa: F401  (a fixture: pytest finds it by name)

pytestmark = pytest.mark.usefixtures("no_tf32")

TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-6, rtol=1e-4)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
L = TINY["num_hidden_layers"]


@pytest.fixture
def calls(monkeypatch):
    """Counts what ran: the fused kernel (and the masks it got), unpadding, the explicit attention
    math and the teaching layer."""
    seen = {"sdpa": 0, "sdpa_masks": [], "unpad": 0, "explicit_attention": 0, "teaching_layer": 0}

    def spy(owner, name, key):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            seen[key] += 1
            if key == "sdpa":
                seen["sdpa_masks"].append(kwargs.get("attn_mask"))
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)

    spy(F, "scaled_dot_product_attention", "sdpa")
    spy(fast, "unpad_index", "unpad")
    spy(SelfAttention, "attention", "explicit_attention")
    spy(BertLayer, "forward", "teaching_layer")
    seen["reset"] = lambda: seen.update(sdpa=0, sdpa_masks=[], unpad=0, explicit_attention=0, teaching_layer=0)
    return seen


def teaching_and_fast(seed: int, device: str = "cpu", **runtime) -> tuple[BertModel, BertModel]:
    """The same weights twice: the teaching path (the defaults) and a model with the fast paths asked for."""
    torch.manual_seed(seed)
    teaching = BertModel(BertConfig(**TINY, **NO_DROPOUT))
    faster = BertModel(BertConfig(**TINY, **NO_DROPOUT), **runtime)
    faster.load_state_dict(teaching.state_dict())
    return teaching.to(device), faster.to(device)


def assert_same_gradients(a: BertModel, b: BertModel) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, **GRAD_TOL, msg=lambda m: f"grad of {name}: {m}")


def real_token_loss(out: dict, real: torch.Tensor) -> torch.Tensor:
    # What every head uses: the real tokens and the pooled [CLS].
    return out["last_hidden_state"][real].square().mean() + out["pooler_output"].sum()


# ---- SDPA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_equals_teaching_path_in_outputs_and_gradients(device, calls):
    teaching, sdpa = teaching_and_fast(seed=5, device=device, attn_implementation="sdpa")
    inputs = {k: v.to(device) for k, v in tiny_inputs(seed=6).items()}
    ot = teaching(**inputs)
    assert (calls["teaching_layer"], calls["explicit_attention"], calls["sdpa"]) == (L, L, 0)
    calls["reset"]()
    of = sdpa(**inputs)
    assert (calls["teaching_layer"], calls["explicit_attention"], calls["sdpa"], calls["unpad"]) == (0, 0, L, 0)
    assert all(m is not None for m in calls["sdpa_masks"]), "a padded batch must be masked"
    torch.testing.assert_close(of["last_hidden_state"], ot["last_hidden_state"], **TOL)  # padding too
    torch.testing.assert_close(of["pooler_output"], ot["pooler_output"], **TOL)
    ot["last_hidden_state"].square().mean().backward()
    of["last_hidden_state"].square().mean().backward()
    assert_same_gradients(teaching, sdpa)


# ---- unpadding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_unpadding_equals_teaching_path_on_real_tokens_and_in_gradients(impl, device, calls):
    teaching, unpadded = teaching_and_fast(seed=3, device=device, attn_implementation=impl, unpad=True)
    inputs = {k: v.to(device) for k, v in tiny_inputs(seed=4).items()}
    real = inputs["attention_mask"].bool()
    assert not real.all()  # a ragged batch: rows of 11, 7 and 4 tokens
    ot = teaching(**inputs)
    calls["reset"]()
    ou = unpadded(**inputs)
    assert calls["unpad"] == 1 and calls["teaching_layer"] == 0, "the unpadded path did not run"
    # manual + unpad computes the attention with the explicit math (SelfAttention.attention)
    assert (calls["explicit_attention"], calls["sdpa"]) == ((L, 0) if impl == "manual" else (0, L))
    torch.testing.assert_close(ou["last_hidden_state"][real], ot["last_hidden_state"][real], **TOL)
    torch.testing.assert_close(ou["pooler_output"], ot["pooler_output"], **TOL)
    # padded positions are never computed: they come out as exact zeros
    assert torch.count_nonzero(ou["last_hidden_state"][~real]) == 0
    real_token_loss(ot, real).backward()
    real_token_loss(ou, real).backward()
    assert_same_gradients(teaching, unpadded)


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers not installed")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hf_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_unpadded_model_matches_transformers_on_real_tokens(impl, hf_impl, device, calls):
    _, model = teaching_and_fast(seed=1, attn_implementation=impl, unpad=True)
    hf = hf_model_from(model, hf_impl).to(device).eval()
    model = model.to(device).eval()
    inputs = {k: v.to(device) for k, v in tiny_inputs(seed=2).items()}
    with torch.no_grad():
        ref = hf(**inputs)
        calls["reset"]()
        ours = model(**inputs)
    assert calls["unpad"] == 1
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours["last_hidden_state"][real], ref.last_hidden_state[real], **TOL)
    torch.testing.assert_close(ours["pooler_output"], ref.pooler_output, **TOL)


def test_unpadded_training_step_with_dropout_runs_and_updates_every_weight(calls):
    torch.manual_seed(7)
    model = BertModel(BertConfig(**TINY), attn_implementation="sdpa", unpad=True).train()
    inputs = tiny_inputs(seed=8)
    out = model(**inputs)
    assert calls["unpad"] == 1
    assert out["last_hidden_state"].shape == (*inputs["input_ids"].shape, TINY["hidden_size"])
    out["last_hidden_state"].square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and "pooler" not in n]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_embedded_checkpoint_unpadded_matches_reference_on_real_text(calls):
    try:
        model = BertModel.from_pretrained("all-MiniLM-L6-v2", attn_implementation="sdpa", unpad=True)
    except FileNotFoundError as e:
        pytest.skip(f"embedded checkpoint not installed: {e}")
    assert (model.attn_implementation, model.unpad) == ("sdpa", True)
    ref = load_safetensors(FIXTURES / "minilm_reference.safetensors")
    for prefix in ("single", "pair"):
        batch = {k: ref[f"{prefix}.{k}"] for k in ("input_ids", "attention_mask", "token_type_ids")}
        real = batch["attention_mask"].bool()
        assert not real.all()
        with torch.no_grad():
            out = model(**batch)
        torch.testing.assert_close(out["last_hidden_state"][real], ref[f"{prefix}.last_hidden_state"][real],
                                   atol=5e-5, rtol=1e-5)
        torch.testing.assert_close(out["pooler_output"], ref[f"{prefix}.pooler_output"], **TOL)
    assert calls["unpad"] == 2


# ---- no mask for a batch without padding ---------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("runtime", [
    dict(attn_implementation="sdpa"),
    dict(attn_implementation="sdpa", unpad=True),
    dict(attn_implementation="manual", unpad=True),
], ids=["sdpa", "sdpa-unpad", "manual-unpad"])
def test_all_ones_mask_is_skipped_and_equals_the_masked_computation(runtime, device, calls):
    teaching, faster = teaching_and_fast(seed=5, device=device, **runtime)
    sdpa = runtime["attn_implementation"] == "sdpa"
    ids = torch.randint(1, TINY["vocab_size"], (4, 9), generator=torch.Generator().manual_seed(6)).to(device)
    ones = torch.ones_like(ids)
    assert fast.padding_mask(ones, torch.float32) is None
    out = faster(ids, ones)
    # neither a mask nor unpadding ran: the fast path took the unmasked, padded-grid route
    assert calls["unpad"] == 0 and calls["teaching_layer"] == 0
    assert calls["sdpa_masks"] == ([None] * L if sdpa else [])
    # the masked computation: the teaching path adds the (all-zero) additive mask in every layer ...
    calls["reset"]()
    masked = teaching(ids, ones)
    assert calls["teaching_layer"] == L
    torch.testing.assert_close(out["last_hidden_state"], masked["last_hidden_state"], **TOL)
    torch.testing.assert_close(out["pooler_output"], masked["pooler_output"], **TOL)
    # ... and the same fast layers given that mask explicitly
    x = faster.embeddings(ids)
    mask = extended_attention_mask(ones, x.dtype)  # (B, 1, 1, T), all zeros
    for layer in faster.layers:
        x = fast.layer_forward(layer, x, mask, sdpa)
    torch.testing.assert_close(out["last_hidden_state"], x, **TOL)
    (out["last_hidden_state"].square().mean() + out["pooler_output"].sum()).backward()
    (masked["last_hidden_state"].square().mean() + masked["pooler_output"].sum()).backward()
    assert_same_gradients(teaching, faster)
    # no attention_mask at all is the same batch
    torch.testing.assert_close(faster(ids)["last_hidden_state"], out["last_hidden_state"], **TOL)


def test_a_single_padded_position_is_not_skipped(calls):
    _, faster = teaching_and_fast(seed=9, attn_implementation="sdpa", unpad=True)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, -1] = 0
    assert fast.padding_mask(mask, torch.float32) is not None
    faster(torch.randint(1, TINY["vocab_size"], (2, 6)) * mask, mask)
    assert calls["unpad"] == 1 and all(m is not None for m in calls["sdpa_masks"])


# ---- torch.compile guards -----------------------------------------------------------------------

def test_under_compile_the_mask_and_the_padded_grid_are_kept(monkeypatch, calls):
    """While torch.compile traces, the data-dependent tricks are off; the result is the teaching path's."""
    teaching, faster = teaching_and_fast(seed=11, attn_implementation="sdpa", unpad=True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    ragged = tiny_inputs(seed=12)
    ones = torch.ones_like(ragged["attention_mask"])
    for inputs in (ragged, dict(ragged, attention_mask=ones)):
        calls["reset"]()
        out = faster(**inputs)
        assert calls["unpad"] == 0 and len(calls["sdpa_masks"]) == L
        assert all(m is not None for m in calls["sdpa_masks"]), "the all-ones test would break the graph"
        torch.testing.assert_close(out["last_hidden_state"], teaching(**inputs)["last_hidden_state"], **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_fast_paths_compile_as_one_graph_and_equal_the_teaching_path(device):
    # fullgraph=True raises at the first graph break. On CPU the "eager" backend checks the tracing
    # only (no code generation, seconds); on CUDA inductor compiles the kernels too.
    teaching, faster = teaching_and_fast(seed=13, device=device, attn_implementation="sdpa", unpad=True)
    compiled = torch.compile(faster, fullgraph=True, backend="inductor" if device == "cuda" else "eager")
    inputs = {k: v.to(device) for k, v in tiny_inputs(seed=14).items()}
    real = inputs["attention_mask"].bool()
    out, ref = compiled(**inputs), teaching(**inputs)
    torch.testing.assert_close(out["last_hidden_state"], ref["last_hidden_state"], **TOL)
    real_token_loss(out, real).backward()
    real_token_loss(ref, real).backward()
    assert_same_gradients(teaching, faster)
    torch._dynamo.reset()
