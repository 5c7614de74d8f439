"""int8 Linear layers whose rows do not depend on each other (batch invariance on the CPU)."""

import warnings

import torch

from nb_completion.engine.rowwise_int8 import RowwiseInt8Linear, quantize


def batch_with_an_outlier_row(k=96, rows=8):
    torch.manual_seed(0)
    x = torch.randn(rows, k)
    x[3] *= 80.0  # one row with large activations (SmolLM2 has such rows)
    return x


def test_each_row_equals_its_solo_result_exactly():
    torch.manual_seed(1)
    linear = torch.nn.Linear(96, 40)
    layer = RowwiseInt8Linear(linear.weight, linear.bias)
    x = batch_with_an_outlier_row()
    with torch.inference_mode():
        batch = layer(x)
        solo = torch.cat([layer(x[i : i + 1]) for i in range(len(x))])
        assert torch.equal(batch, solo)
        assert torch.allclose(batch, linear(x), rtol=0.05, atol=0.05 * float(x.abs().max()))


def test_torch_dynamic_quantization_is_not_batch_invariant():
    """Why the module exists: one activation scale per tensor couples the rows."""
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(96, 40)), {torch.nn.Linear}, dtype=torch.qint8
        )[0]
    x = batch_with_an_outlier_row()
    with torch.inference_mode():
        solo = torch.cat([layer(x[i : i + 1]) for i in range(len(x))])
        assert not torch.equal(layer(x), solo)


def test_quantize_fuses_projections_of_one_input_and_keeps_the_model_close(tiny_backend):
    from nb_completion.engine.tiny import build_model

    model = build_model(len(tiny_backend.tokenizer))
    ids = torch.tensor([tiny_backend.encode("The capital of France is Paris.")])
    with torch.inference_mode():
        reference = model(input_ids=ids).logits
        quantize(model)
        attention = model.model.layers[0].self_attn
        assert attention.q_proj._fused is attention.k_proj._fused is attention.v_proj._fused
        assert not any(type(m) is torch.nn.Linear for m in model.modules())
        logits = model(input_ids=ids).logits
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.8


def test_the_native_op_gives_fbgemms_numbers_eager_and_compiled():
    """int8_op: the C++ op behind a plain key (built once per machine; CI has a compiler)."""
    import gc

    import pytest

    from nb_completion.engine import int8_op

    assert int8_op.available()
    torch.manual_seed(2)
    linear = torch.nn.Linear(64, 24)
    layer = RowwiseInt8Linear(linear.weight, linear.bias)
    assert layer._native
    rows = torch.randn(5, 64)
    direct = torch.ops.quantized.linear_dynamic(rows, layer._packed, int8_op.REDUCE_RANGE)
    assert torch.equal(torch.ops.nb_completion_int8.int8_linear(rows, layer._key), direct)
    compiled = torch.compile(layer.forward, fullgraph=True)
    with torch.inference_mode():
        assert torch.equal(compiled(rows), layer(rows))
    key = layer._key
    del layer, compiled
    gc.collect()
    with pytest.raises(RuntimeError, match="was dropped"):  # a freed layer's weights are let go
        torch.ops.nb_completion_int8.int8_linear(rows, key)


def test_without_the_native_op_fbgemm_is_called_from_python(monkeypatch):
    from nb_completion.engine import int8_op

    monkeypatch.setenv("NB_COMPLETION_INT8_OP", "0")
    assert int8_op.OP.build() is False
    monkeypatch.setattr(int8_op.OP, "built", False)
    torch.manual_seed(3)
    linear = torch.nn.Linear(64, 24)
    python_path, native = RowwiseInt8Linear(linear.weight, linear.bias), None
    monkeypatch.setattr(int8_op.OP, "built", True)
    native = RowwiseInt8Linear(linear.weight, linear.bias)
    assert not python_path._native and native._native
    rows = torch.randn(5, 64)
    with torch.inference_mode():
        assert torch.equal(python_path(rows), native(rows))
        compiled = torch.compile(python_path.forward, fullgraph=True)
        assert torch.equal(compiled(rows), python_path(rows))
