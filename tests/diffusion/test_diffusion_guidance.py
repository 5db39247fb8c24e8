"""Classifier-free guidance: one batched forward, the guidance formula, unguided variance channels."""

import pytest
import torch

from unclip.diffusion import GaussianDiffusion, bind, classifier_free_guidance, ddim_sample
from unclip.errors import InputError


class RecordingModel:
    """A stand-in network whose output depends on x, t and the condition, recording each call."""

    def __init__(self, out_channels_factor=1):
        self.calls = []
        self.factor = out_channels_factor

    def __call__(self, x, t, *, emb, mask=None):
        self.calls.append({"batch": x.shape[0], "t": t.clone(), "emb": emb.clone(), "mask": mask})
        pred = x * 0.5 + t.float()[:, None, None, None] / 1000 + emb[:, :, None, None]
        if self.factor == 2:  # learned variance: append variance channels that depend on cond too
            return torch.cat([pred, torch.tanh(emb)[:, :, None, None].expand_as(x)], 1)
        return pred


def _inputs(B=3, C=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, 4, 4, generator=g)
    t = torch.tensor([5, 500, 999])[:B]
    cond = {"emb": torch.randn(B, C, generator=g)}
    uncond = {"emb": torch.zeros(B, C)}
    return x, t, cond, uncond


def test_scale_one_is_the_conditional_output_in_one_call_of_batch_B():
    model = RecordingModel()
    x, t, cond, uncond = _inputs()
    out = classifier_free_guidance(model, 1.0, cond, uncond)(x, t)
    assert len(model.calls) == 1 and model.calls[0]["batch"] == 3
    assert torch.equal(model.calls[0]["emb"], cond["emb"])
    assert torch.equal(out, RecordingModel()(x, t, emb=cond["emb"]))


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5])
def test_guided_output_in_one_call_of_batch_2B(scale):
    model = RecordingModel()
    x, t, cond, uncond = _inputs()
    out = classifier_free_guidance(model, scale, cond, uncond)(x, t)
    assert len(model.calls) == 1 and model.calls[0]["batch"] == 6
    assert torch.equal(model.calls[0]["t"], torch.cat([t, t]))
    assert torch.equal(model.calls[0]["emb"], torch.cat([cond["emb"], uncond["emb"]]))
    ref = RecordingModel()
    c, u = ref(x, t, emb=cond["emb"]), ref(x, t, emb=uncond["emb"])
    assert torch.allclose(out, u + scale * (c - u), atol=1e-6)
    assert out.shape == x.shape


def test_variance_channels_are_not_guided():
    model = RecordingModel(out_channels_factor=2)
    x, t, cond, uncond = _inputs()
    out = classifier_free_guidance(model, 4.0, cond, uncond, guided_channels=2)(x, t)
    ref = RecordingModel(out_channels_factor=2)
    c, u = ref(x, t, emb=cond["emb"]), ref(x, t, emb=uncond["emb"])
    assert out.shape == (3, 4, 4, 4)
    assert torch.allclose(out[:, :2], u[:, :2] + 4.0 * (c[:, :2] - u[:, :2]), atol=1e-6)
    assert torch.equal(out[:, 2:], c[:, 2:])  # from the conditional half, as is
    assert not torch.allclose(out[:, 2:], u[:, 2:] + 4.0 * (c[:, 2:] - u[:, 2:]))
    with pytest.raises(InputError, match="guided_channels"):
        classifier_free_guidance(model, 4.0, cond, uncond, guided_channels=9)(x, t)


def test_batch_one_uncond_broadcasts_and_none_values_pass_through():
    model = RecordingModel()
    x, t, cond, _ = _inputs()
    guided = classifier_free_guidance(model, 2.0, {**cond, "mask": None}, {"emb": torch.zeros(1, 2), "mask": None})
    out = guided(x, t)
    assert model.calls[0]["emb"].shape == (6, 2) and model.calls[0]["mask"] is None
    full = classifier_free_guidance(RecordingModel(), 2.0, cond, {"emb": torch.zeros(3, 2)})(x, t)
    assert torch.allclose(out, full)


def test_bad_conditions_raise():
    model = RecordingModel()
    x, t, cond, uncond = _inputs()
    with pytest.raises(InputError, match="same keys"):
        classifier_free_guidance(model, 2.0, cond, {})
    with pytest.raises(InputError, match="scale"):
        classifier_free_guidance(model, float("nan"), cond, uncond)
    with pytest.raises(InputError, match="shape"):
        classifier_free_guidance(model, 2.0, cond, {"emb": torch.zeros(3, 5)})(x, t)


def test_bind_and_guidance_plug_into_a_sampler():
    model = RecordingModel()
    x, _, cond, uncond = _inputs()
    d = GaussianDiffusion.make("cosine", 100)
    out_bound = ddim_sample(bind(model, **cond), d, x, steps=4)
    assert [c["batch"] for c in model.calls] == [3] * 4
    model.calls.clear()
    out_guided = ddim_sample(classifier_free_guidance(model, 1.0, cond, uncond), d, x, steps=4)
    assert torch.equal(out_bound, out_guided) and [c["batch"] for c in model.calls] == [3] * 4
    model.calls.clear()
    ddim_sample(classifier_free_guidance(model, 3.0, cond, uncond), d, x, steps=4)
    assert [c["batch"] for c in model.calls] == [6] * 4
