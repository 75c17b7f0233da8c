"""The exercise checkers accept a correct answer and reject a wrong one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm.lessons.checkers import check_copying_score, check_head_mean_ablation, check_previous_token_scores


def test_an_exercise_checker_reports_an_empty_stub_refuses_a_wrong_answer_and_passes_a_right_one(capsys):
    """The mechanism every check_* shares (checkers.exercise), on a checker of its own."""
    from minillm.lessons.checkers import exercise

    @exercise
    def check_double(fn):
        if fn(3) != 6:
            raise AssertionError(f"double(3): you have {fn(3)}, expected 6")
        print("double: correct.")

    def double(x):
        raise NotImplementedError("your code here")

    check_double(double)  # the stub as the lesson ships it: a message, and no exception
    out = capsys.readouterr().out
    assert "`double` is not written yet" in out and "open the solution in the next cell" in out

    def double(x):
        return x + 2

    with pytest.raises(AssertionError, match="expected 6"):
        check_double(double)

    def double(x):
        x * 2  # no return

    with pytest.raises(AssertionError, match="returned None"):
        check_double(double)

    def double(x):
        return 2 * x

    check_double(double)
    assert "correct" in capsys.readouterr().out


def test_an_exercise_checker_names_the_empty_stub_the_answer_calls_and_lets_other_errors_through(capsys):
    from minillm.lessons.checkers import exercise

    @exercise
    def check_double(fn):
        assert fn(3) == 6

    def twice(x):  # an earlier exercise, still a stub
        raise NotImplementedError("your code here")

    def double(x):
        return twice(x)

    check_double(double)
    assert "`twice`, which `double` calls, is not written yet" in capsys.readouterr().out

    def double(x):  # a NotImplementedError from a library is a real error, not an empty stub
        import logging

        logging.Handler().emit(None)  # "emit must be implemented by Handler subclasses"

    with pytest.raises(NotImplementedError, match="emit must be implemented"):
        check_double(double)


@pytest.mark.slow
def test_every_checker_is_an_exercise_and_reports_an_empty_stub(capsys):
    """Every lesson checker goes through `exercise`; on a stub, even one called inside a model's
    hooks, each prints the message instead of raising the stub's NotImplementedError."""
    import minillm.lessons.checkers as checkers

    names = [n for n in dir(checkers) if n.startswith("check_")]
    assert len(names) >= 13
    wrapper = checkers.exercise(lambda fn: None).__code__  # the code of every @exercise checker
    for name in names:
        assert getattr(checkers, name).__code__ is wrapper, f"{name} is not an @exercise"

    def stub(*args):
        raise NotImplementedError("your code here")

    for check in (checkers.check_head_mean_ablation, checkers.check_fourier_basis):
        check(stub)
        assert capsys.readouterr().out.count("`stub` is not written yet") == 1, check.__name__


def right_prev(cache, n_layers):
    out = []
    for l in range(n_layers):
        p = cache["pattern", l]  # [b, h, q, k]
        n = p.shape[-1]
        out.append(jnp.stack([p[:, :, q, q - 1] for q in range(1, n)], -1).mean((0, 2)))
    return jnp.stack(out)


def wrong_prev(cache, n_layers):  # the diagonal: attention to itself, not to the previous token
    return jnp.stack([jnp.diagonal(cache["pattern", l], axis1=2, axis2=3).mean((0, 2)) for l in range(n_layers)])


@pytest.mark.slow
def test_previous_token_checker(capsys):
    check_previous_token_scores(right_prev)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="previous-token"):
        check_previous_token_scores(wrong_prev)


def test_mean_ablation_checker():
    check_head_mean_ablation(lambda z, hook, head, ref: z.at[:, :, head].set(ref[:, :, head].mean(0)))
    with pytest.raises(AssertionError, match="mean-ablated"):  # the mean over positions too: wrong
        check_head_mean_ablation(lambda z, hook, head, ref: z.at[:, :, head].set(ref[:, :, head].mean((0, 1))))


def test_copying_score_checker():
    def right(model, layer, head):
        attn = model.blocks[layer].attn
        full = model.embed.W_E[...] @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U[...]
        return float((full.argmax(-1) == jnp.arange(full.shape[0])).mean())

    check_copying_score(right)
    with pytest.raises(AssertionError, match="copying score"):
        check_copying_score(lambda model, layer, head: 1.0)


def test_fourier_checkers():
    from minillm.fourier import excluded_logits, fourier_basis, frequency_norms, select_key_frequencies
    from minillm.lessons.checkers import check_excluded_logits, check_fourier_basis, check_key_frequencies

    check_fourier_basis(lambda p: fourier_basis(p)[0])
    with pytest.raises(AssertionError, match="Fourier basis"):  # unnormalised rows
        check_fourier_basis(lambda p: fourier_basis(p)[0] * 2)
    check_key_frequencies(lambda W_E, p: select_key_frequencies(frequency_norms(W_E[:p])))
    with pytest.raises(AssertionError, match="key frequencies"):
        check_key_frequencies(lambda W_E, p: sorted(select_key_frequencies(frequency_norms(W_E[:p]))))
    check_excluded_logits(lambda logits, freqs: excluded_logits(logits, freqs))
    with pytest.raises(AssertionError, match="excluded logits"):
        check_excluded_logits(lambda logits, freqs: logits)


def test_probe_checkers_accept_a_right_answer_and_refuse_a_wrong_one():
    from minillm.lessons.checkers import check_r2, check_ridge_probe

    def ridge(acts, labels, lam):
        mean_x, mean_y = acts.mean(0), labels.mean()
        x = acts - mean_x
        w = np.linalg.solve(x.T @ x + lam * np.eye(acts.shape[1]), x.T @ (labels - mean_y))
        return w, mean_y - mean_x @ w

    check_ridge_probe(ridge)
    with pytest.raises(AssertionError, match="ridge"):
        check_ridge_probe(lambda a, y, lam: ridge(a, y, 2 * lam + 1.0))  # the penalty counted wrong
    r2 = lambda y, p: 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    check_r2(r2)
    with pytest.raises(AssertionError, match="R\\^2"):
        check_r2(lambda y, p: np.corrcoef(y, p)[0, 1] ** 2)  # squared correlation is not R^2


def test_superposition_checkers_accept_a_right_answer_and_refuse_a_wrong_one():
    from minillm.lessons.checkers import check_importance_weighted_loss, check_superposition_model

    check_superposition_model(lambda W, b, x: jax.nn.relu(x @ W.T @ W + b))
    with pytest.raises(AssertionError, match="toy model"):
        check_superposition_model(lambda W, b, x: x @ W.T @ W + b)  # no ReLU
    check_importance_weighted_loss(lambda x, y, imp: (imp * (x - y) ** 2).sum(-1).mean())
    with pytest.raises(AssertionError, match="importance"):
        check_importance_weighted_loss(lambda x, y, imp: ((x - y) ** 2).sum(-1).mean())  # importance ignored


@pytest.mark.slow  # ~11 s
def test_forward_checker_accepts_the_model_and_refuses_a_missing_piece():
    """The model's own forward pass passes; one that forgets the final LayerNorm, or gives one
    stream too few, does not."""
    from minillm import GPT
    from minillm.lessons.checkers import check_forward_from_state_dict

    def via_model(weights, cfg, tokens, final_ln=True):
        model = GPT.from_state_dict(cfg, weights)  # no random weights drawn
        _, cache = model.run_with_cache(tokens)
        streams = [cache["resid_pre", 0]] + [cache["resid_post", l] for l in range(cfg.n_layers)]
        resid = streams[-1]
        if final_ln:
            return jnp.stack(streams), model(tokens)
        return jnp.stack(streams), resid @ weights["unembed.W_U"] + weights["unembed.b_U"]

    check_forward_from_state_dict(via_model)
    with pytest.raises(AssertionError, match="logits"):
        check_forward_from_state_dict(lambda w, c, t: via_model(w, c, t, final_ln=False))
    with pytest.raises(AssertionError, match="residual streams"):
        check_forward_from_state_dict(lambda w, c, t: (via_model(w, c, t)[0][:-1], via_model(w, c, t)[1]))


def test_universality_checkers_accept_a_right_answer_and_refuse_a_wrong_one():
    from minillm.clock_pizza import by_sum_and_difference, distance_irrelevance_of
    from minillm.fourier import frequency_norms
    from minillm.lessons.checkers import check_distance_irrelevance, check_stacked_frequency_norms

    check_stacked_frequency_norms(lambda W, p: jax.vmap(lambda w: frequency_norms(w[:p], p))(W))
    with pytest.raises(AssertionError):
        check_stacked_frequency_norms(lambda W, p: jax.vmap(lambda w: frequency_norms(w[:p], p) ** 2)(W))
    check_distance_irrelevance(distance_irrelevance_of)
    over_d = lambda c: by_sum_and_difference(jnp.asarray(c)).std(axis=1).mean() / jnp.asarray(c).std()
    with pytest.raises(AssertionError):  # the standard deviation over d instead of over s
        check_distance_irrelevance(over_d)


@pytest.mark.slow
def test_ioi_checkers_accept_a_right_answer_and_refuse_a_wrong_one():
    """Lesson 7's: path patching by hand (its right answer, Wang's three steps, is the lesson's
    solution, which the lesson runs through the checker) and mean ablation at positions."""
    from minillm.lessons.checkers import check_mean_ablate_at_positions, check_path_patch_by_hand

    with pytest.raises(AssertionError, match="path"):  # the sender's own layer instead of the receiver's input
        check_path_patch_by_hand(lambda m, clean, corrupted, metric, sender, receiver: metric(m(corrupted)))

    def mean_ablate(model, tokens, means, entries):
        def hook(z, hook):
            layer = int(hook.name.split(".")[1])
            for l, h, p in entries:
                z = z.at[:, p, h].set(means[l][p, h]) if l == layer else z
            return z

        return model.run_with_hooks(tokens, [(lambda n: n.endswith("hook_z"), hook)])

    check_mean_ablate_at_positions(mean_ablate)
    with pytest.raises(AssertionError, match="mean-ablated"):  # zero instead of the mean
        check_mean_ablate_at_positions(
            lambda model, tokens, means, entries: mean_ablate(
                model, tokens, {l: 0 * m for l, m in means.items()}, entries
            )
        )


def test_attribution_checker_accepts_influence_and_refuses_a_plausible_wrong_one():
    """Lesson 9's: node influence w (N + N^2 + ...) on the row-normalised |A|. Refused: the signed
    matrix (no absolute value), one step only (the direct effect), and the weights counted as
    their own influence (N^0 included)."""
    from minillm.attribution import influence, normalized_adjacency
    from minillm.lessons.checkers import check_node_influence

    def paths(N, weights):
        reach, total = np.asarray(weights, np.float64), np.zeros(len(weights))
        for _ in range(len(weights)):
            reach = reach @ N
            total += reach
        return total

    def signed(A, weights):
        A = np.asarray(A, np.float64)
        sums = A.sum(1, keepdims=True)
        return paths(np.divide(A, sums, out=np.zeros_like(A), where=sums != 0), weights)

    check_node_influence(influence)
    check_node_influence(lambda A, w: paths(normalized_adjacency(A), w))
    wrong = {
        "no absolute value": signed,
        "one step": lambda A, w: np.asarray(w) @ normalized_adjacency(A),
        "the weights included": lambda A, w: influence(A, w) + w,
        "columns normalised": lambda A, w: paths(normalized_adjacency(np.asarray(A).T).T, w),
    }
    for fn in wrong.values():
        with pytest.raises(AssertionError, match="influence"):
            check_node_influence(fn)


def test_language_model_checkers_accept_a_right_answer_and_refuse_a_wrong_one():
    """Lesson 8's: the logit lens (refused: the final LayerNorm left out, the last stream read
    before the last block instead of after it) and the in-context learning score (refused: early
    minus late, and the first eighth instead of p // 16 .. p // 8)."""
    from minillm.decompose import accumulated_resid
    from minillm.lessons.checkers import check_icl_score, check_logit_lens_losses

    def lens(model, tokens, ln=True, last="resid_post"):
        _, cache = model.run_with_cache(tokens)
        n = model.cfg.n_layers
        streams = [cache["resid_pre", l] for l in range(n)] + [cache[last, n - 1]]
        out = []
        for x in streams:
            if ln:
                x = x - x.mean(-1, keepdims=True)
                x = x / jnp.sqrt((x * x).mean(-1, keepdims=True) + model.cfg.eps)
                x = x * model.ln_final.w[...] + model.ln_final.b[...]
            logp = jax.nn.log_softmax(x @ model.W_U + model.b_U, -1)[:, :-1]
            out.append(-jnp.take_along_axis(logp, tokens[:, 1:, None], -1).mean())
        return jnp.stack(out)

    def library_lens(model, tokens):
        _, cache = model.run_with_cache(tokens)
        logp = jax.nn.log_softmax(accumulated_resid(model, cache, apply_ln=True) @ model.W_U + model.b_U, -1)
        logp = logp[:, :, :-1]
        return -jnp.take_along_axis(logp, jnp.broadcast_to(tokens[None, :, 1:, None], logp.shape[:3] + (1,)), -1).mean(
            (1, 2, 3)
        )

    check_logit_lens_losses(lens)
    check_logit_lens_losses(library_lens)
    for wrong in [lambda m, t: lens(m, t, ln=False), lambda m, t: lens(m, t, last="resid_pre")]:
        with pytest.raises(AssertionError, match="logit lens"):
            check_logit_lens_losses(wrong)

    def icl(nll):
        p = nll.shape[1]
        return nll[:, p - p // 8 :].mean() - nll[:, p // 16 : p // 8].mean()

    check_icl_score(icl)
    for wrong in [
        lambda nll: -icl(nll),
        lambda nll: nll[:, -(nll.shape[1] // 8) :].mean() - nll[:, : nll.shape[1] // 8].mean(),
    ]:
        with pytest.raises(AssertionError, match="in-context"):
            check_icl_score(wrong)
