"""Label models: turn a label matrix (rows x labeling functions, -1 = abstain) into labels.

A portfolio, each a small closed-form or EM fit in numpy:

- ``majority``: each row's most voted class (ties and empty rows go to the class prior).
- ``weighted``: votes weighted by each LF's log-odds of being right (accuracies from the gold dev
  split when given, else from agreement with the majority vote).
- ``dawid_skene``: EM over one confusion matrix per LF whose outcomes include abstaining, so an
  LF that abstains more on one class says something too.
- ``matrix_completion``: Snorkel's model (Ratner et al. 2019): the class-conditional vote
  probabilities ``mu`` fitted so that ``mu P mu^T`` matches the LFs' observed co-votes off the
  diagonal blocks, then a naive-Bayes posterior.
- ``dev_naive_bayes``: the same per-LF tables as ``dawid_skene`` (abstain an outcome), counted
  on the gold dev split instead of estimated from the unlabelled rows. Only with a dev split,
  and scored there by 5-fold cross-validation, since it was fitted on those labels.

The class prior is an explicit setting: ``"uniform"``, ``"estimated"`` (from the gold dev labels
when given, else from the majority vote) or a list of probabilities. With a gold dev split,
``fit`` scores every model with each prior on it and keeps the best, never one below majority
vote; without one it uses ``dawid_skene`` with the estimated prior. What it chose and every
score are kept (``chosen``, ``scores``) so a labelled dataset version can record them.
Parameters are fitted on at most ``fit_rows`` rows (a seeded sample): a model of ``m`` LFs has
about ``m K^2`` parameters, which a sample of 100,000 rows pins down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmforge.errors import LabelModelError

ABSTAIN = -1
MODELS = ("majority", "weighted", "dawid_skene", "matrix_completion", "dev_naive_bayes")
Array = np.ndarray[Any, Any]


@dataclass
class Fitted:
    """One fitted model: predicts log-posteriors (up to a constant) per row and class."""

    kind: str
    prior: Array
    weights: Array | None = None  # weighted: per LF
    log_theta: Array | None = None  # dawid_skene / matrix_completion: (m, K + 1, K)

    def tables(self, m: int, k: int) -> tuple[Array, Array]:
        """(per-LF score of each outcome for each class (m, k + 1, k), each row's base)."""
        if self.kind in ("majority", "weighted"):
            weights = np.ones(m) if self.weights is None else self.weights
            votes = np.concatenate([np.zeros((1, k)), np.eye(k)])  # abstaining adds nothing
            # Ties, and rows nobody voted on, are settled by the prior (a tiny tilt).
            return weights[:, None, None] * votes, 1e-6 * np.log(self.prior)
        assert self.log_theta is not None
        return self.log_theta, np.log(self.prior)

    def log_scores(self, L: Array, k: int, votes: _Votes | None = None) -> Array:
        tables, base = self.tables(L.shape[1], k)
        if votes is not None:  # a matrix visited many times (EM, the dev split): its votes
            return votes.scores(tables, base)
        return _grouped_scores(L, tables, base)


@dataclass
class LabelModel:
    """``LabelModel().fit(L_train, L_dev=..., y_dev=...)``, then ``predict_proba`` / ``predict``."""

    cardinality: int | None = None  # classes; default: from the labels seen
    prior: str | Sequence[float] | None = None  # None: chosen on the dev split (or estimated)
    models: Sequence[str] = MODELS
    metric: str = "accuracy"  # or "f1" (binary, class 1 positive): how dev scores are compared
    fit_rows: int = 100_000
    iterations: int = 10
    seed: int = 0
    chosen: str = ""
    chosen_prior: list[float] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    _fitted: Fitted | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def fit(self, L: Any, L_dev: Any = None, y_dev: Any = None) -> LabelModel:
        L = _matrix(L, "L")
        k = self.cardinality or int(max(L.max(initial=0), _max(y_dev), _max(L_dev)) + 1)
        if k < 2:
            raise LabelModelError("the label matrix has fewer than two classes; set cardinality")
        self.cardinality = k
        _check_range(L, k, "L")
        for name in self.models:
            if name not in MODELS:
                raise LabelModelError(f"unknown label model {name!r} (known: {', '.join(MODELS)})")
        if self.metric not in ("accuracy", "f1"):
            raise LabelModelError(f"metric must be accuracy or f1, not {self.metric!r}")
        sample = _sample(L, self.fit_rows, self.seed)
        dev = None
        if L_dev is not None or y_dev is not None:
            if L_dev is None or y_dev is None:
                raise LabelModelError("give both L_dev and y_dev, or neither")
            L_dev, y = _matrix(L_dev, "L_dev"), np.asarray(y_dev, dtype=np.int64).ravel()
            if L_dev.shape != (y.size, L.shape[1]):
                raise LabelModelError(
                    f"L_dev is {L_dev.shape}, y_dev has {y.size} labels and L has {L.shape[1]} "
                    "LFs: they must agree"
                )
            _check_range(L_dev, k, "L_dev")
            if y.min(initial=0) < 0 or y.max(initial=0) >= k:
                raise LabelModelError(f"y_dev must hold classes 0..{k - 1}")
            dev = (L_dev, y)
        majority = Fitted("majority", np.full(k, 1 / k))
        priors = self._priors(sample, k, majority, dev)
        if dev is None:
            prior_name, prior = next(iter(priors.items()))
            unsupervised = [m for m in self.models if m != "dev_naive_bayes"]
            if not unsupervised:
                raise LabelModelError("dev_naive_bayes needs a gold dev split (L_dev, y_dev)")
            self._fitted = self._fit_one(
                "dawid_skene" if "dawid_skene" in unsupervised else unsupervised[0], sample, k,
                prior,
            )  # fmt: skip
            self.chosen, self.chosen_prior = f"{self._fitted.kind}/{prior_name}", prior.tolist()
            return self
        best: tuple[float, str, Fitted] | None = None
        mv_score = None
        # Dawid-Skene's EM is refitted per prior (its E-steps use it); the others are fitted once
        # and scored with each prior swapped into their posterior (log prior + the same tables).
        first_prior = next(iter(priors.values()))
        dev_votes = _Votes(dev[0], k)
        folds = self._folds(dev, k) if "dev_naive_bayes" in self.models else []
        fits = {name: self._fit_one(name, sample, k, first_prior, dev) for name in self.models}
        for prior_name, prior in priors.items():
            for name in self.models:
                if name == "dawid_skene" and prior is not first_prior:
                    fitted = self._fit_one(name, sample, k, prior, dev)
                else:
                    fitted = dataclasses.replace(fits[name], prior=prior)
                if name == "dev_naive_bayes":  # fitted on the dev labels: scored out of fold
                    score = self._cross_validated(folds, k, prior)
                else:
                    predicted = _argmax(fitted.log_scores(dev[0], k, dev_votes))
                    score = _score(self.metric, dev[1], predicted)
                self.scores[f"{name}/{prior_name}"] = score
                if name == "majority":
                    mv_score = score if mv_score is None else max(mv_score, score)
                if best is None or score > best[0] + 1e-12:
                    best = (score, f"{name}/{prior_name}", fitted)
        assert best is not None
        if mv_score is not None and best[0] < mv_score:  # the guard: never below majority vote
            best = (mv_score, "majority", majority)
        self.chosen, self._fitted = best[1], best[2]
        self.chosen_prior = best[2].prior.tolist()
        return self

    def predict_proba(self, L: Any) -> Array:
        fitted = self._require()
        L = _matrix(L, "L")
        assert self.cardinality is not None
        _check_range(L, self.cardinality, "L")
        scores = fitted.log_scores(L, self.cardinality)
        if fitted.kind in ("majority", "weighted"):
            scores = scores * 5.0  # votes as logits: a soft vote, still the same argmax
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        return np.asarray(probabilities / probabilities.sum(axis=1, keepdims=True))

    def predict(self, L: Any) -> Array:
        self._require()
        return _argmax(self.predict_proba(L))

    def _require(self) -> Fitted:
        if self._fitted is None:
            raise LabelModelError("the label model is not fitted yet: call fit() first")
        return self._fitted

    def _votes(self, L: Array, k: int) -> _Votes:
        return self._once("votes", L, lambda: _Votes(L, k))  # type: ignore[no-any-return]

    def _co_votes(self, L: Array, k: int) -> Array:
        return self._once("co_votes", L, lambda: co_votes(L, k))  # type: ignore[no-any-return]

    def _once(self, key: str, L: Array, build: Any) -> Any:
        """What ``build`` makes of ``L``, made once per fitted matrix (several fits share it)."""
        cached = self._cache.get(key)
        if cached is None or cached[0] is not L:
            cached = (L, build())
            self._cache[key] = cached
        return cached[1]

    def _folds(self, dev: tuple[Array, Array], k: int) -> list[tuple[Array, Array, _Votes]]:
        """5 folds of the dev split: (held-out rows' labels, tables counted on the rest, the
        held-out rows' votes)."""
        L_dev, y = dev
        out = []
        for fold in np.array_split(np.random.default_rng(self.seed).permutation(y.size), 5):
            rest = np.setdiff1d(np.arange(y.size), fold)
            out.append((y[fold], _counted_tables(L_dev[rest], y[rest], k), _Votes(L_dev[fold], k)))
        return out

    def _cross_validated(
        self, folds: list[tuple[Array, Array, _Votes]], k: int, prior: Array
    ) -> float:
        truth, predicted = [], []
        for y, log_theta, votes in folds:
            truth.append(y)
            predicted.append(_argmax(votes.log_scores(log_theta, prior)))
        return _score(self.metric, np.concatenate(truth), np.concatenate(predicted))

    def _priors(
        self, L: Array, k: int, majority: Fitted, dev: tuple[Array, Array] | None
    ) -> dict[str, Array]:
        if self.prior is not None and not isinstance(self.prior, str):
            prior = np.asarray(self.prior, dtype=np.float64)
            if prior.shape != (k,) or np.any(prior <= 0) or abs(prior.sum() - 1) > 1e-6:
                raise LabelModelError(f"prior must be {k} positive probabilities summing to 1")
            return {"given": prior}
        if dev is not None:
            counts = np.bincount(dev[1], minlength=k) + 1.0
        else:
            covered = L.max(axis=1) >= 0
            counts = np.bincount(_argmax(majority.log_scores(L[covered], k)), minlength=k) + 1.0
        options = {"estimated": counts / counts.sum(), "uniform": np.full(k, 1 / k)}
        if self.prior is None:
            return options if dev is not None else {"estimated": options["estimated"]}
        if self.prior not in options:
            raise LabelModelError(
                f"prior must be uniform, estimated or probabilities, not {self.prior!r}"
            )
        return {self.prior: options[self.prior]}

    def _fit_one(
        self, name: str, L: Array, k: int, prior: Array, dev: tuple[Array, Array] | None = None
    ) -> Fitted:
        if name == "majority":
            return Fitted("majority", prior)
        if name == "weighted":
            return Fitted("weighted", prior, weights=_vote_weights(L, k, prior, dev))
        if name == "dawid_skene":
            log_theta = _dawid_skene(L, k, prior, self.iterations, self._votes(L, k))
            return Fitted("dawid_skene", prior, log_theta=log_theta)
        if name == "dev_naive_bayes":
            assert dev is not None
            return Fitted("dev_naive_bayes", prior, log_theta=_counted_tables(dev[0], dev[1], k))
        return Fitted(
            "matrix_completion",
            prior,
            log_theta=_matrix_completion(self._co_votes(L, k), L.shape[1], k, prior, self.seed),
        )


# ---- the fits ------------------------------------------------------------------------------


def _vote_weights(L: Array, k: int, prior: Array, dev: tuple[Array, Array] | None) -> Array:
    """Per LF, log(acc (k - 1) / (1 - acc)): its vote's log-odds, accuracy smoothed."""
    if dev is not None:
        L_ref, y = dev
    else:
        L_ref, y = L, _argmax(Fitted("majority", prior).log_scores(L, k))
    voted = L_ref >= 0
    right = ((L_ref == y[:, None]) & voted).sum(axis=0)
    accuracy = (right + 1.0) / (voted.sum(axis=0) + 2.0)
    accuracy = np.clip(accuracy, 1e-3, 1 - 1e-3)
    return np.asarray(np.maximum(np.log(accuracy * (k - 1) / (1 - accuracy)), 0.0))


def _dawid_skene(L: Array, k: int, prior: Array, iterations: int, votes: _Votes) -> Array:
    """EM for per-LF confusion tables P(outcome | class), abstain an outcome; returns their logs
    as (m, k + 1, k). Starts from the majority vote's posterior; the prior stays fixed. Only the
    votes are visited: an abstain's share is the class mass minus the votes' (most entries of a
    label matrix are abstains)."""
    m = L.shape[1]
    posterior = _softmax(Fitted("majority", prior).log_scores(L, k, votes) * 5.0)
    log_theta = np.zeros((m, k + 1, k))
    for _ in range(iterations):
        new_log_theta = votes.tables(posterior)
        posterior = _softmax(votes.log_scores(new_log_theta, prior))
        converged = np.max(np.abs(new_log_theta - log_theta)) < 1e-3
        log_theta = new_log_theta
        if converged:
            break
    return log_theta


class _Votes:
    """The non-abstain entries of a label matrix, for EM steps that cost O(votes)."""

    def __init__(self, L: Array, k: int) -> None:
        self.n, self.m = L.shape
        self.k = k
        flat = L.ravel()
        where = np.flatnonzero(flat >= 0)  # 1-D: much faster than a 2-D nonzero
        self.rows, self.lfs = np.divmod(where, self.m)
        self.cell = self.lfs * k + flat[where]  # (LF, vote) pair, 0 .. m k - 1

    def counted(self, y: Array) -> Array:
        """Smoothed log P(outcome | class) per LF counted against known classes ``y``."""
        return self.tables(np.eye(self.k)[y])

    def tables(self, posterior: Array) -> Array:
        """Smoothed log P(outcome | class) per LF from a posterior (outcome 0 = abstain)."""
        m, k = self.m, self.k
        voted = np.stack(
            [np.bincount(self.cell, posterior[self.rows, c], m * k) for c in range(k)], axis=1
        ).reshape(m, k, k)
        abstained = posterior.sum(axis=0)[None, None, :] - voted.sum(axis=1, keepdims=True)
        counts = np.concatenate([np.maximum(abstained, 0.0), voted], axis=1) + 0.5
        return np.asarray(np.log(counts / counts.sum(axis=1, keepdims=True)))

    def log_scores(self, log_theta: Array, prior: Array) -> Array:
        return self.scores(log_theta, np.log(prior))

    def scores(self, tables: Array, base: Array) -> Array:
        base = base + tables[:, 0, :].sum(axis=0)  # everyone abstaining
        delta = (tables[:, 1:, :] - tables[:, :1, :]).reshape(self.m * self.k, self.k)
        scores = np.tile(base, (self.n, 1))
        for c in range(self.k):
            scores[:, c] += np.bincount(self.rows, delta[self.cell, c], self.n)
        return scores


def _counted_tables(L: Array, y: Array, k: int) -> Array:
    """log P(outcome | class) per LF counted on labelled rows (abstain an outcome), smoothed."""
    return _Votes(L, k).counted(y)


def co_votes(L: Array, k: int) -> Array:
    """O: the rate at which each (LF, vote) pair co-occurs with each other, (m k, m k)."""
    n, m = L.shape
    X = np.zeros((n, m * k), dtype=np.float32)
    rows, lfs = np.nonzero(L >= 0)
    X[rows, lfs * k + L[rows, lfs]] = 1.0
    return np.asarray((X.T @ X).astype(np.float64) / n)  # float32 sums of 0/1: exact to 2^24


def _matrix_completion(
    observed: Array, m: int, k: int, prior: Array, seed: int, steps: int = 100
) -> Array:
    """Snorkel's label model: mu[j, o, c] = P(LF j votes o | class c) for the non-abstain
    outcomes, fitted by Adam so that mu P mu^T matches the observed co-vote rates O off the
    diagonal blocks (conditionally independent LFs) and mu P's row sums match each outcome's
    rate, starting from LFs better than chance (which picks the sign symmetry)."""
    rates = np.diag(observed).copy()  # P(LF j votes o)
    off_block = (np.kron(np.eye(m), np.ones((k, k))) == 0).astype(np.float64)  # different LFs
    observed_off = observed * off_block
    # The gradient needs (mu P mu^T with its diagonal blocks zeroed - O likewise) @ mu, which
    # is mu P (mu^T mu) minus each LF's own block: never an (m k)^2 matrix per step.
    # Start: each vote o for class c at its rate, tilted 70/30 towards o == c.
    tilt = np.tile(np.eye(k) * 0.7 + 0.3 / max(k - 1, 1) * (1 - np.eye(k)), (m, 1))
    mu = rates[:, None] * tilt / np.maximum((tilt * prior).sum(axis=1, keepdims=True), 1e-12)
    mu += np.random.default_rng(seed).normal(0, 1e-6, mu.shape)
    first, second = np.zeros_like(mu), np.zeros_like(mu)
    scale = 1.0 / max(float(rates.max()), 1e-9)  # a learning rate relative to the rates
    for step in range(1, steps + 1):
        blocks = mu.reshape(m, k, k)
        own = np.einsum("jok,jkl->jol", blocks * prior, np.einsum("jok,jol->jkl", blocks, blocks))
        residual_mu = (mu * prior) @ (mu.T @ mu) - own.reshape(m * k, k) - observed_off @ mu
        marginal = mu @ prior - rates
        gradient = 4 * residual_mu * prior + 2 * marginal[:, None] * prior[None, :]
        first = 0.9 * first + 0.1 * gradient
        second = 0.999 * second + 0.001 * gradient**2
        step_size = 0.04 / scale
        mu -= step_size * (first / (1 - 0.9**step)) / (np.sqrt(second / (1 - 0.999**step)) + 1e-12)
        np.clip(mu, 1e-6, 1.0, out=mu)
    mu = mu.reshape(m, k, k)
    abstain = np.clip(1 - mu.sum(axis=1, keepdims=True), 1e-6, 1.0)
    theta = np.concatenate([abstain, mu], axis=1)
    return np.asarray(np.log(theta / theta.sum(axis=1, keepdims=True)))


def _grouped_scores(L: Array, tables: Array, base: Array, block: int = 1 << 16) -> Array:
    """base + the sum over LFs of tables[j, L[:, j] + 1], a group of LFs at a time: each
    group's votes form one code, looked up in the group's summed table (at most 4,096
    entries), so a row costs one lookup per group rather than one per LF. Rows go in blocks,
    transposed while they fit in cache."""
    n, m = L.shape
    outcomes, k = tables.shape[1], tables.shape[2]
    size = max(1, int(np.log(4096) // np.log(outcomes)))
    groups = []
    for start in range(0, m, size):
        members = list(range(start, min(m, start + size)))
        combos = np.arange(outcomes ** len(members))
        summed = np.zeros((combos.size, k))
        for place, j in enumerate(members):
            summed += tables[j][(combos // outcomes**place) % outcomes]
        groups.append((members, summed))
    scores = np.empty((n, k))
    for first in range(0, n, block):
        columns = np.ascontiguousarray(L[first : first + block].T).astype(np.int16)
        columns += 1  # outcome 0 is abstaining
        part = np.tile(base, (columns.shape[1], 1))
        for members, summed in groups:
            code = np.zeros(columns.shape[1], np.int16)  # below 4,096: int16 is enough
            for place, j in enumerate(members):
                code += columns[j] * np.int16(outcomes**place)
            part += summed[code]
        scores[first : first + block] = part
    return scores


# ---- helpers -------------------------------------------------------------------------------


def _matrix(L: Any, name: str) -> Array:
    array = np.asarray(L)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise LabelModelError(
            f"{name} must be a non-empty 2-D matrix (rows x LFs), got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise LabelModelError(f"{name} must hold integers (-1 = abstain), got {array.dtype}")
    return array  # any integer dtype (int8 is plenty): no copy of a large matrix


def _check_range(L: Array, k: int, name: str) -> None:
    low, high = int(L.min()), int(L.max())
    if low < ABSTAIN or high >= k:
        raise LabelModelError(
            f"{name} holds {low if low < ABSTAIN else high}: votes are -1..{k - 1}"
        )


def _max(values: Any) -> int:
    return -1 if values is None else int(np.max(values, initial=-1))


def _sample(L: Array, rows: int, seed: int) -> Array:
    if L.shape[0] <= rows:
        return L
    picked = np.random.default_rng(seed).choice(L.shape[0], rows, replace=False)
    return np.asarray(L[np.sort(picked)])


def _softmax(scores: Array) -> Array:
    scores = scores - scores.max(axis=1, keepdims=True)
    out = np.exp(scores)
    return np.asarray(out / out.sum(axis=1, keepdims=True))


def _argmax(scores: Array) -> Array:
    return np.asarray(np.argmax(scores, axis=1))


def _score(metric: str, y: Array, predicted: Array) -> float:
    if metric == "accuracy":
        return float(np.mean(predicted == y))
    true_positive = float(np.sum((predicted == 1) & (y == 1)))
    denominator = float(np.sum(predicted == 1) + np.sum(y == 1))
    return 2 * true_positive / denominator if denominator else 0.0
