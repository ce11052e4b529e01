"""The embedding tap: same logits as a plain forward pass, the classifier's input for every registry model,
per-thread captures on a shared model, and shared by deep copies."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from radiolens.errors import ModelError
from radiolens.models.embedding import EmbeddingTap
from radiolens.models.registry import available_models, create_model


@pytest.mark.parametrize("arch", available_models())
def test_tap_reads_the_classifier_input(arch):
    torch.manual_seed(0)
    model = create_model(arch, 3).eval()
    size = 32 if arch == "lenet5" else 64 if arch == "small_cnn" else 96
    x = torch.randn(2, 1, size, size)
    tap = EmbeddingTap(model, 3)
    logits, emb = tap(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(tap.layer(emb), logits, rtol=1e-4, atol=1e-4)  # the head maps emb to logits
    assert emb.shape == (2, tap.dim)
    tap.close()
    assert not tap.layer._forward_pre_hooks


def test_threads_get_their_own_embeddings_and_copies_share_the_tap():
    torch.manual_seed(0)
    model = create_model("small_cnn", 1).eval()
    tap = EmbeddingTap(model, 1)
    inputs = [torch.randn(1, 1, 64, 64) for _ in range(8)]
    expected = [tap(x)[1] for x in inputs]
    got: dict[int, torch.Tensor] = {}

    def work(i):
        for _ in range(20):
            got[i] = tap(inputs[i])[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        torch.testing.assert_close(got[i], expected[i])
    clone = copy.deepcopy(model)
    _, emb = tap(inputs[0], model=clone)
    torch.testing.assert_close(emb, expected[0])


def test_model_without_matching_head_is_a_typed_error():
    with pytest.raises(ModelError, match="final linear layer"):
        EmbeddingTap(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), 1)
