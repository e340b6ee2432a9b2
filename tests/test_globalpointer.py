"""GlobalPointer pieces against direct computations: RoPE, the loss, masking, decoding."""

import math

import torch

from nlpcli.nn.globalpointer import (
    NEG,
    EfficientGlobalPointer,
    GlobalPointer,
    decode_spans,
    globalpointer_loss,
    multilabel_categorical_crossentropy,
    span_mask,
)
from nlpcli.nn.rope import apply_rope, rope_tables


def test_rope_matches_pairwise_rotation():
    torch.manual_seed(0)
    d, n = 8, 5
    x = torch.randn(n, d)
    cos, sin = rope_tables(n, d)
    y = apply_rope(x, cos, sin)
    for m in range(n):
        for t in range(d // 2):
            theta = m * 10000 ** (-2 * t / d)
            a, b = x[m, 2 * t], x[m, 2 * t + 1]
            assert torch.allclose(y[m, 2 * t], a * math.cos(theta) - b * math.sin(theta), atol=1e-5)
            assert torch.allclose(y[m, 2 * t + 1], b * math.cos(theta) + a * math.sin(theta), atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(1)
    d = 16
    q, k = torch.randn(d), torch.randn(d)
    cos, sin = rope_tables(40, d)

    def score(m, n):
        return apply_rope(q, cos[m], sin[m]) @ apply_rope(k, cos[n], sin[n])

    assert torch.allclose(score(3, 7), score(23, 27), atol=1e-4)
    assert not torch.allclose(score(3, 7), score(3, 9), atol=1e-3)


def test_loss_equals_direct_formula():
    torch.manual_seed(2)
    logits = torch.randn(3, 12)
    labels = torch.rand(3, 12) > 0.7
    expected = []
    for row, lab in zip(logits, labels):
        neg = sum(math.exp(s) for s, y in zip(row.tolist(), lab.tolist()) if not y)
        pos = sum(math.exp(-s) for s, y in zip(row.tolist(), lab.tolist()) if y)
        expected.append(math.log(1 + neg) + math.log(1 + pos))
    got = multilabel_categorical_crossentropy(logits, labels)
    assert abs(got.item() - sum(expected) / len(expected)) < 1e-5


def test_loss_and_its_gradient_equal_the_dense_form_at_any_scale():
    # The loss sums over gathered positives; the dense form (every score of a row, twice) is the reference.
    def dense(logits, labels, rows):
        y = labels.to(logits.dtype)
        s = (1 - 2 * y) * logits
        zeros = torch.zeros_like(s[..., :1])
        neg = torch.logsumexp(torch.cat([s - y * 1e12, zeros], -1), -1)
        pos = torch.logsumexp(torch.cat([s - (1 - y) * 1e12, zeros], -1), -1)
        return ((neg + pos) * rows).sum() / rows.sum()

    torch.manual_seed(3)
    for scale in (1.0, 30.0, 1e4):  # large scores: a confident model, whose exponents must not overflow
        logits = torch.randn(10, 300) * scale
        logits[:, ::5] = NEG
        labels = (torch.rand(10, 300) < 0.03) & (logits > NEG)
        labels[4] = False  # a row with no positive
        rows = torch.tensor([1.0, 1, 0, 1, 1, 1, 0, 1, 1, 1])
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        want, got = dense(a, labels, rows), multilabel_categorical_crossentropy(b, labels, rows)
        want.backward()
        got.backward()
        assert torch.isfinite(got)
        assert torch.allclose(got, want, rtol=1e-5), (scale, got, want)
        assert torch.allclose(b.grad, a.grad, rtol=1e-4, atol=1e-7), scale


def test_masked_scores_do_not_count_in_loss():
    logits = torch.tensor([[[[1.0, NEG], [NEG, -2.0]]]])
    labels = torch.tensor([[[[True, False], [False, False]]]])
    # Only the two real cells count: neg {-2}, pos {1}.
    expected = math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))
    assert abs(globalpointer_loss(logits, labels).item() - expected) < 1e-6


def test_span_mask_blocks_padding_and_reversed_spans():
    m = span_mask(torch.tensor([[1, 1, 0]]))
    assert m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[True, True, False], [False, True, False], [False, False, False]]


def test_heads_mask_and_shape():
    torch.manual_seed(3)
    h = torch.randn(2, 6, 16)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    for head in (GlobalPointer(16, 3, 8), EfficientGlobalPointer(16, 3, 8)):
        out = head(h, mask)
        assert out.shape == (2, 3, 6, 6)
        assert (out[1, :, 4:, :] <= NEG / 2).all() and (out[:, :, 3, 1] <= NEG / 2).all()
        assert (out[0, :, 1, 3] > NEG / 2).all()


def test_efficient_bias_follows_the_formula():
    torch.manual_seed(4)
    head = EfficientGlobalPointer(8, 2, 4, rope=False)
    h = torch.randn(1, 3, 8)
    out = head(h, torch.ones(1, 3))
    p = head.p_dense(h)[0]
    q, k = p[:, 0::2], p[:, 1::2]
    w = head.q_dense(p)  # [L, 2T]
    for t in range(2):
        for i in range(3):
            for j in range(i, 3):
                expected = q[i] @ k[j] / 2 + (w[j, 2 * t] + w[i, 2 * t + 1]) / 2
                assert torch.allclose(out[0, t, i, j], expected, atol=1e-5)


def test_decode_returns_nested_spans():
    logits = torch.full((2, 2, 5, 5), -5.0)
    logits[0, 0, 1, 3] = 2.0  # outer span, type 0
    logits[0, 1, 1, 1] = 0.5  # nested inner span, type 1
    logits[1, 1, 0, 4] = 0.1
    spans = [[s[:3] for s in row] for row in decode_spans(logits)]
    assert spans == [[(0, 1, 3), (1, 1, 1)], [(1, 0, 4)]]
    assert [[s[:3] for s in row] for row in decode_spans(logits, threshold=1.0)] == [[(0, 1, 3)], []]
    assert [s[3] for s in decode_spans(logits)[0]] == [logits[0, 0, 1, 3].item(), logits[0, 1, 1, 1].item()]


def test_decode_keeps_spans_up_to_max_len():
    logits = torch.full((1, 2, 6, 6), -5.0)
    logits[0, 0, 0, 4] = 3.0  # 5 positions
    logits[0, 1, 2, 3] = 1.0  # 2 positions
    logits[0, 1, 5, 5] = 0.2  # 1 position
    assert [s[:3] for s in decode_spans(logits, max_len=5)[0]] == [(0, 0, 4), (1, 2, 3), (1, 5, 5)]
    assert [s[:3] for s in decode_spans(logits, max_len=2)[0]] == [(1, 2, 3), (1, 5, 5)]
    assert [s[:3] for s in decode_spans(logits, max_len=1)[0]] == [(1, 5, 5)]
