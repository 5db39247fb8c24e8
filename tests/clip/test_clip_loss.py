"""Contrastive loss: chance level, alignment, symmetry, duplicate captions."""

import math

import pytest
import torch
import torch.nn.functional as F

from unclip.clip.loss import caption_ids_from_tokens, contrastive_loss
from unclip.errors import InputError


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_random_embeddings_give_log_batch_size():
    b = 64
    loss = contrastive_loss(_unit(b, 512, 0), _unit(b, 512, 1), 1.0)
    assert abs(loss.item() - math.log(b)) < 0.05


def test_aligned_embeddings_give_lower_loss():
    x = _unit(32, 64, 0)
    random = contrastive_loss(x, _unit(32, 64, 1), 14.3)
    aligned = contrastive_loss(x, x, 14.3)
    assert aligned < 0.1 < random
    # A higher temperature multiplier sharpens the aligned case further.
    assert contrastive_loss(x, x, 50.0) < aligned


def test_symmetric_in_images_and_texts():
    a, b = _unit(16, 32, 0), _unit(16, 32, 1)
    assert torch.allclose(contrastive_loss(a, b, 10.0), contrastive_loss(b, a, 10.0))


def test_gradient_flows_to_scale_and_embeddings():
    a = _unit(8, 16, 0).requires_grad_()
    s = torch.tensor(10.0, requires_grad=True)
    contrastive_loss(a, _unit(8, 16, 1), s).backward()
    assert a.grad.abs().sum() > 0 and s.grad.abs() > 0


def test_caption_ids_all_distinct_matches_plain_loss():
    a, b = _unit(12, 32, 0), _unit(12, 32, 1)
    assert torch.allclose(contrastive_loss(a, b, 7.0), contrastive_loss(a, b, 7.0, caption_ids=torch.arange(12)))


def test_duplicate_captions_are_not_negatives():
    # Images 0,1 share one caption, 2,3 another; each image embeds as its caption.
    together = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    apart = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    ids = torch.tensor([0, 0, 1, 1])
    # Grouped: duplicates together is optimal (loss = entropy of the 2-way target, no
    # gradient); pulling them apart costs. Plain InfoNCE rewards pulling them apart.
    grouped = contrastive_loss(together, together, 20.0, caption_ids=ids)
    assert grouped.item() == pytest.approx(math.log(2), abs=1e-4)
    assert contrastive_loss(apart, apart, 20.0, caption_ids=ids) > grouped + 1.0
    assert contrastive_loss(apart, apart, 20.0) < contrastive_loss(together, together, 20.0) - 0.3
    e = together.clone().requires_grad_()
    contrastive_loss(e, together, 20.0, caption_ids=ids).backward()
    assert e.grad.abs().max() < 1e-5


def test_caption_ids_from_tokens():
    tokens = torch.tensor([[1, 5, 2, 0], [1, 6, 2, 0], [1, 5, 2, 0], [1, 5, 5, 2]])
    ids = caption_ids_from_tokens(tokens)
    assert ids[0] == ids[2] and len({ids[0].item(), ids[1].item(), ids[3].item()}) == 3


def test_shape_errors():
    with pytest.raises(InputError):
        contrastive_loss(_unit(4, 8, 0), _unit(5, 8, 1), 1.0)
    with pytest.raises(InputError):
        contrastive_loss(_unit(4, 8, 0), _unit(4, 8, 1), 1.0, caption_ids=torch.arange(3))
