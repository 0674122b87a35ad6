"""Tests for swe_toolkit.solver against independent NumPy solutions and brute-force optimization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from swe_toolkit.errors import ConfigurationError, NumericalError, ShapeError
from swe_toolkit.solver import (
    compact_factors,
    EditSolution,
    edit_objective,
    nullspace_basis,
    nullspace_projector,
    solve_edit,
)

# Relative slack allowed when the closed form is compared with brute-force optima.
OPTIMUM_TOLERANCE = 1e-9


def make_problem(seed: int, d: int = 8, k: int = 6, n: int = 20, general: int = 5):
    """Return float64 X (d, n), R (k, n), X_g (d, general) and K_g = X_g X_g^T."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(d, n, generator=generator, dtype=torch.float64)
    R = torch.randn(k, n, generator=generator, dtype=torch.float64)
    X_g = torch.randn(d, general, generator=generator, dtype=torch.float64)
    return X, R, X_g, X_g @ X_g.mT


def system_matrix(X, K_g, alpha, lam) -> np.ndarray:
    d = X.shape[0]
    C = X.numpy() @ X.numpy().T + lam * np.eye(d)
    if K_g is not None:
        C = C + alpha * K_g.numpy()
    return C


def numpy_objective(D, X, R, K_g, alpha, lam) -> float:
    D, X, R = np.asarray(D), X.numpy(), R.numpy()
    value = np.sum((D @ X - R) ** 2) + lam * np.sum(D**2)
    if K_g is not None:
        value += alpha * np.trace(D @ K_g.numpy() @ D.T)
    return float(value)


def top_singular_values(X, R, K_g, alpha, lam) -> np.ndarray:
    """Singular values of R X^T C^{-1/2}, using the symmetric square root from eigh.

    They equal those of R X^T L^{-T} because the two whitenings differ by an orthogonal factor.
    """
    C = system_matrix(X, K_g, alpha, lam)
    eigenvalues, eigenvectors = np.linalg.eigh(C)
    inverse_root = eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T
    return np.linalg.svd(R.numpy() @ X.numpy().T @ inverse_root, compute_uv=False)


def brute_force_minimum(objective, k: int, d: int, rank: int, starts: int, seed: int) -> float:
    """Minimize objective(A @ B) over A (k, rank) and B (rank, d) with L-BFGS from random starts."""
    generator = torch.Generator().manual_seed(seed)
    best = math.inf
    for _ in range(starts):
        A = torch.randn(k, rank, generator=generator, dtype=torch.float64).requires_grad_()
        B = torch.randn(rank, d, generator=generator, dtype=torch.float64).requires_grad_()
        optimizer = torch.optim.LBFGS(
            [A, B], max_iter=400, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
        )

        def closure():
            optimizer.zero_grad()
            loss = objective(A @ B)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            best = min(best, float(objective(A @ B)))
    return best


def torch_objective(X, R, K_g, alpha, lam):
    def objective(D):
        value = torch.sum((D @ X - R) ** 2) + lam * torch.sum(D**2)
        if K_g is not None:
            value = value + alpha * torch.sum((D @ K_g) * D)
        return value

    return objective


# Penalty form


@pytest.mark.parametrize(
    ("seed", "alpha", "lam", "n"),
    [(0, 0.0, 1e-3, 20), (1, 0.5, 0.1, 20), (2, 3.0, 0.0, 4), (3, 0.0, 2.0, 3)],
)
def test_full_rank_matches_normal_equations(seed, alpha, lam, n):
    X, R, _, K_g = make_problem(seed, n=n)
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam)

    C = system_matrix(X, K_g, alpha, lam)
    expected = np.linalg.solve(C, X.numpy() @ R.numpy().T).T
    assert isinstance(solution, EditSolution)
    assert solution.delta.shape == (6, 8)
    assert solution.rank == 6
    assert solution.constraint == "penalty"
    np.testing.assert_allclose(solution.delta.numpy(), expected, rtol=1e-9, atol=1e-11)
    assert solution.objective == pytest.approx(numpy_objective(expected, X, R, K_g, alpha, lam), rel=1e-10)
    assert solution.baseline_objective == pytest.approx(float(np.sum(R.numpy() ** 2)), rel=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_reduced_rank_beats_brute_force(rank):
    X, R, _, K_g = make_problem(10 + rank)
    alpha, lam = 0.7, 0.05
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, rank=rank)

    assert solution.rank == rank
    assert torch.linalg.matrix_rank(solution.delta) == rank
    objective = torch_objective(X, R, K_g, alpha, lam)
    best = brute_force_minimum(objective, k=6, d=8, rank=rank, starts=4, seed=rank)
    assert solution.objective <= best + OPTIMUM_TOLERANCE * abs(best)
    # The brute force should reach the same optimum, which shows it is a meaningful comparison.
    assert best == pytest.approx(solution.objective, rel=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_reduced_rank_perturbations_never_improve(rank):
    X, R, _, K_g = make_problem(20 + rank)
    alpha, lam = 0.3, 0.2
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, rank=rank)
    objective = torch_objective(X, R, K_g, alpha, lam)

    generator = torch.Generator().manual_seed(rank)
    for scale in (1e-1, 1e-3, 1e-5):
        for _ in range(50):
            left = solution.left + scale * torch.randn(solution.left.shape, generator=generator, dtype=torch.float64)
            right = solution.right + scale * torch.randn(
                solution.right.shape, generator=generator, dtype=torch.float64
            )
            perturbed = float(objective(left @ right))
            assert perturbed >= solution.objective - 1e-12 * solution.objective


@pytest.mark.parametrize("rank", [1, 2, 5, 6])
def test_reduced_rank_optimum_from_singular_values(rank):
    X, R, _, K_g = make_problem(30 + rank)
    alpha, lam = 1.5, 0.01
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, rank=rank)

    singular_values = top_singular_values(X, R, K_g, alpha, lam)
    expected = float(np.sum(R.numpy() ** 2) - np.sum(singular_values[:rank] ** 2))
    np.testing.assert_allclose(solution.singular_values.numpy(), singular_values, rtol=1e-9)
    assert solution.objective == pytest.approx(expected, rel=1e-9)
    direct = edit_objective(solution.delta, X, R, K_g=K_g, alpha=alpha, lam=lam)
    assert direct == pytest.approx(expected, rel=1e-9)


def test_objective_non_increasing_in_rank():
    X, R, _, K_g = make_problem(40, d=10, k=7)
    objectives = [solve_edit(X, R, K_g=K_g, alpha=0.2, lam=0.1, rank=rank).objective for rank in range(1, 8)]

    for lower, higher in zip(objectives, objectives[1:]):
        assert higher <= lower + 1e-12 * lower
    assert objectives[-1] < objectives[0]


@pytest.mark.parametrize("rank", [None, 2])
def test_large_alpha_shrinks_general_response(rank):
    X, R, X_g, K_g = make_problem(50)
    alphas = [0.0, 0.1, 1.0, 10.0, 100.0, 1000.0]
    responses = [
        float(torch.linalg.matrix_norm(solve_edit(X, R, K_g=K_g, alpha=alpha, lam=0.01, rank=rank).delta @ X_g))
        for alpha in alphas
    ]

    for weaker, stronger in zip(responses, responses[1:]):
        assert stronger <= weaker * (1 + 1e-9)
    assert responses[-1] < 0.05 * responses[0]


def test_lam_relative_scales_by_mean_eigenvalue():
    X, R, _, K_g = make_problem(60)
    alpha, lam_relative = 0.4, 0.02
    relative = solve_edit(X, R, K_g=K_g, alpha=alpha, lam_relative=lam_relative)

    expected_lam = lam_relative * float(np.trace(system_matrix(X, K_g, alpha, 0.0))) / X.shape[0]
    absolute = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=expected_lam)
    assert relative.lam == pytest.approx(expected_lam, rel=1e-12)
    torch.testing.assert_close(relative.delta, absolute.delta, rtol=1e-12, atol=1e-14)


def test_condition_number_is_close_lower_bound():
    X, R, _, K_g = make_problem(70)
    for lam in (1e-3, 1.0):
        solution = solve_edit(X, R, K_g=K_g, alpha=0.5, lam=lam)
        exact = float(np.linalg.cond(system_matrix(X, K_g, 0.5, lam)))
        assert solution.condition_number <= exact * (1 + 1e-8)
        assert solution.condition_number >= 0.99 * exact


def test_max_condition_near_exact_value():
    X, R, _, K_g = make_problem(75)
    exact = float(np.linalg.cond(system_matrix(X, K_g, 0.5, 0.01)))

    solve_edit(X, R, K_g=K_g, alpha=0.5, lam=0.01, max_condition=1.01 * exact)
    with pytest.raises(NumericalError, match="exceeds max_condition"):
        solve_edit(X, R, K_g=K_g, alpha=0.5, lam=0.01, max_condition=0.98 * exact)


def test_edit_objective_matches_numpy():
    X, R, _, K_g = make_problem(80)
    D = torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    value = edit_objective(D.float(), X.float(), R.float(), K_g=K_g.float(), alpha=0.3, lam=0.7)
    expected = numpy_objective(D.float().double().numpy(), X.float().double(), R.float().double(),
                               K_g.float().double(), 0.3, 0.7)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12)


# Gram eigendecomposition vs full SVD


def svd_reference(X, R, K_g, alpha, lam, rank):
    """Return D = [M]_r L^{-1} and all singular values of M, from a full NumPy SVD of M = R X^T L^{-T}."""
    L = np.linalg.cholesky(system_matrix(X, K_g, alpha, lam))
    M = np.linalg.solve(L, X.numpy() @ R.numpy().T).T
    U, S, Vh = np.linalg.svd(M, full_matrices=False)
    truncated = (U[:, :rank] * S[:rank]) @ Vh[:rank]
    return np.linalg.solve(L.T, truncated.T).T, S


@pytest.mark.parametrize(
    ("d", "k", "rank"),
    [(8, 12, 3), (8, 8, 3), (12, 6, 3), (8, 12, 8), (12, 6, 6), (8, 8, 8)],
    ids=["k>d", "k=d", "k<d", "full-rank-k>d", "full-rank-k<d", "full-rank-k=d"],
)
def test_gram_path_matches_svd_reference(d, k, rank):
    X, R, _, K_g = make_problem(400 + d + k + rank, d=d, k=k)
    alpha, lam = 0.6, 0.05
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, rank=rank)

    expected_delta, expected_singular_values = svd_reference(X, R, K_g, alpha, lam, rank)
    assert solution.left.shape == (k, rank)
    assert solution.right.shape == (rank, d)
    np.testing.assert_allclose(solution.delta.numpy(), expected_delta, rtol=1e-9, atol=1e-11)
    assert solution.singular_values.shape == (min(k, d),)
    np.testing.assert_allclose(solution.singular_values.numpy(), expected_singular_values, rtol=1e-9)
    optimum = float(np.sum(R.numpy() ** 2) - np.sum(expected_singular_values[:rank] ** 2))
    assert solution.objective == pytest.approx(optimum, rel=1e-10)
    assert solution.objective == pytest.approx(numpy_objective(expected_delta, X, R, K_g, alpha, lam), rel=1e-10)


@pytest.mark.parametrize(("d", "k", "rank"), [(8, 12, 3), (12, 6, 3), (8, 12, 8), (12, 6, 6)])
def test_factor_forms(d, k, rank):
    X, R, _, K_g = make_problem(420 + d + k + rank, d=d, k=k)
    solution = solve_edit(X, R, K_g=K_g, alpha=0.6, lam=0.05, rank=rank)
    left, right = solution.left, solution.right
    singular_values = solution.singular_values[:rank]
    identity = torch.eye(rank, dtype=torch.float64)

    if rank == min(k, d) and k >= d:
        torch.testing.assert_close(right, identity, rtol=0, atol=0)
    elif rank == min(k, d):
        torch.testing.assert_close(left, identity, rtol=0, atol=0)
    elif k >= d:
        # left = M V_r has orthogonal columns whose norms are the top singular values.
        torch.testing.assert_close(left.mT @ left, torch.diag(singular_values**2), rtol=0, atol=1e-10)
    else:
        # left = U_r has orthonormal columns, and the rows of right L are U_r^T M with norms sigma_i.
        cholesky = torch.linalg.cholesky(torch.from_numpy(system_matrix(X, K_g, 0.6, 0.05)))
        torch.testing.assert_close(left.mT @ left, identity, rtol=0, atol=1e-12)
        row_norms = torch.linalg.vector_norm(right @ cholesky, dim=1)
        torch.testing.assert_close(row_norms, singular_values, rtol=1e-9, atol=0)


def make_problem_with_spectrum(seed: int, d: int, k: int, spectrum: list[float], lam: float):
    """Return X (d, 3 d) and R (k, 3 d) whose whitened cross term M = R X^T L^{-T} has the given singular values.

    With alpha = 0, C = X X^T + lam I = L L^T. R = M L^T (X X^T)^{-1} X gives R X^T = M L^T, so
    R X^T L^{-T} = M.
    """
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(d, 3 * d, generator=generator, dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(k, len(spectrum), generator=generator, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, len(spectrum), generator=generator, dtype=torch.float64))
    M = U @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ V.mT
    L = torch.linalg.cholesky(X @ X.mT + lam * torch.eye(d, dtype=torch.float64))
    R = M @ L.mT @ torch.linalg.solve(X @ X.mT, X)
    return X, R


# Resolution of singular values from the Gram matrix, sqrt(eps) * sigma_1 in float64, with slack.
GRAM_RESOLUTION = 2e-8


@pytest.mark.parametrize("relative_gap", [0.0, 1e-12, 1e-8, 1e-4])
@pytest.mark.parametrize(("d", "k"), [(8, 12), (12, 8)], ids=["k>d", "k<d"])
def test_near_degenerate_spectrum_stays_optimal(relative_gap, d, k):
    # sigma_3 and sigma_4 nearly coincide, so rank 3 cuts through a near-tie and the kept
    # subspace is ill-determined. The objective must still reach the optimum.
    spectrum = [1e3, 10.0, 2.0 * (1 + relative_gap), 2.0, 1.0, 0.5]
    lam, rank = 0.1, 3
    X, R = make_problem_with_spectrum(500, d, k, spectrum, lam)
    solution = solve_edit(X, R, lam=lam, rank=rank)

    expected_delta, expected_singular_values = svd_reference(X, R, None, 0.0, lam, rank)
    optimum = float(np.sum(R.numpy() ** 2) - np.sum(expected_singular_values[:rank] ** 2))
    reference_objective = numpy_objective(expected_delta, X, R, None, 0.0, lam)
    # Both methods round the objective by about eps * sigma_1^2.
    slack = 1e-13 * spectrum[0] ** 2
    assert solution.objective <= reference_objective + slack
    assert solution.objective == pytest.approx(optimum, abs=slack)
    assert torch.linalg.matrix_rank(solution.delta) == rank
    np.testing.assert_allclose(solution.singular_values[:6].numpy(), spectrum, rtol=1e-9)
    np.testing.assert_allclose(solution.singular_values[:6].numpy(), expected_singular_values[:6], rtol=1e-9)


def test_singular_values_resolution():
    # Values below sqrt(eps) * sigma_1 are not resolved by the Gram matrix, but they stay at that level.
    spectrum = [1e3, 1.0, 1e-3, 1e-6]
    X, R = make_problem_with_spectrum(510, 8, 12, spectrum, 0.1)
    solution = solve_edit(X, R, lam=0.1, rank=2)
    singular_values = solution.singular_values

    assert singular_values.shape == (8,)
    np.testing.assert_allclose(singular_values[:2].numpy(), spectrum[:2], rtol=1e-9)
    # The absolute error of sigma_i is about eps * sigma_1^2 / sigma_i, which is 1e-7 for sigma_i = 1e-3.
    assert float(singular_values[2]) == pytest.approx(spectrum[2], rel=1e-3)
    assert bool(torch.all(singular_values[3:] <= GRAM_RESOLUTION * spectrum[0]))
    assert bool(torch.all(singular_values >= 0))
    assert bool(torch.all(singular_values[:-1] >= singular_values[1:]))


# Nullspace form


def test_nullspace_annihilates_general_inputs():
    X, R, X_g, K_g = make_problem(90, d=12, general=7)
    for rank in (1, 3, None):
        solution = solve_edit(X, R, K_g=K_g, lam=0.01, rank=rank, constraint="nullspace")
        response = torch.linalg.matrix_norm(solution.delta @ X_g)
        assert solution.constraint == "nullspace"
        assert response <= 1e-10 * torch.linalg.matrix_norm(X_g) * torch.linalg.matrix_norm(solution.delta)
        # The edit is not trivially zero.
        assert solution.objective < 0.99 * solution.baseline_objective


def test_nullspace_full_rank_matches_reduced_normal_equations():
    X, R, _, K_g = make_problem(100, d=12, general=7)
    alpha, lam, threshold = 2.0, 0.05, 1e-3
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, constraint="nullspace", null_threshold=threshold)

    eigenvalues, eigenvectors = np.linalg.eigh(K_g.numpy())
    Q = eigenvectors[:, eigenvalues < threshold * eigenvalues[-1]]
    assert Q.shape[1] == 5
    Z = Q.T @ X.numpy()
    C = Z @ Z.T + alpha * Q.T @ K_g.numpy() @ Q + lam * np.eye(5)
    reduced = np.linalg.solve(C, Z @ R.numpy().T).T
    np.testing.assert_allclose(solution.delta.numpy(), reduced @ Q.T, rtol=1e-8, atol=1e-10)
    assert solution.singular_values.shape == (5,)


def make_graded_gram(seed: int) -> torch.Tensor:
    """Return a 6 x 6 K_g whose two smallest eigenvalues, 1e-3 and 4e-3, are small but not zero."""
    generator = torch.Generator().manual_seed(seed)
    Q_full, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    spectrum = torch.tensor([1e-3, 4e-3, 0.5, 1.0, 2.0, 10.0], dtype=torch.float64)
    return Q_full @ torch.diag(spectrum) @ Q_full.mT


def test_nullspace_alpha_penalizes_kept_directions():
    K_g = make_graded_gram(300)
    generator = torch.Generator().manual_seed(301)
    X = torch.randn(6, 9, generator=generator, dtype=torch.float64)
    R = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    alpha, lam = 50.0, 0.01
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, constraint="nullspace", null_threshold=1e-2)

    eigenvalues, eigenvectors = np.linalg.eigh(K_g.numpy())
    Q = eigenvectors[:, :2]
    Z = Q.T @ X.numpy()
    C = Z @ Z.T + alpha * np.diag(eigenvalues[:2]) + lam * np.eye(2)
    reduced = np.linalg.solve(C, Z @ R.numpy().T).T
    np.testing.assert_allclose(solution.delta.numpy(), reduced @ Q.T, rtol=1e-9, atol=1e-11)
    assert solution.objective == pytest.approx(numpy_objective(reduced @ Q.T, X, R, K_g, alpha, lam), rel=1e-10)


def test_nullspace_lam_relative_uses_reduced_gram():
    K_g = make_graded_gram(310)
    generator = torch.Generator().manual_seed(311)
    X = torch.randn(6, 9, generator=generator, dtype=torch.float64)
    R = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    alpha, lam_relative = 20.0, 0.1
    solution = solve_edit(
        X, R, K_g=K_g, alpha=alpha, lam_relative=lam_relative, constraint="nullspace", null_threshold=1e-2
    )

    eigenvalues, eigenvectors = np.linalg.eigh(K_g.numpy())
    Z = eigenvectors[:, :2].T @ X.numpy()
    reduced_trace = np.trace(Z @ Z.T) + alpha * np.sum(eigenvalues[:2])
    assert solution.lam == pytest.approx(lam_relative * reduced_trace / 2, rel=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_nullspace_beats_brute_force_in_subspace(rank):
    X, R, _, K_g = make_problem(110 + rank, d=12, general=7)
    alpha, lam = 1.0, 0.05
    solution = solve_edit(X, R, K_g=K_g, alpha=alpha, lam=lam, rank=rank, constraint="nullspace")

    basis, _ = nullspace_basis(K_g, 1e-3)
    full_objective = torch_objective(X, R, K_g, alpha, lam)

    def objective(reduced):
        return full_objective(reduced @ basis.mT)

    best = brute_force_minimum(objective, k=6, d=basis.shape[1], rank=rank, starts=4, seed=rank)
    assert solution.objective <= best + OPTIMUM_TOLERANCE * abs(best)
    assert best == pytest.approx(solution.objective, rel=1e-6)


def test_nullspace_rank_limit_is_dimension():
    X, R, _, K_g = make_problem(120, d=12, general=9)
    solve_edit(X, R, K_g=K_g, rank=3, constraint="nullspace")

    with pytest.raises(ConfigurationError, match=r"rank=4 .*between 1 and .*m=3.* = 3"):
        solve_edit(X, R, K_g=K_g, rank=4, constraint="nullspace")


# Projector and basis


def test_projector_properties():
    _, _, _, K_g = make_problem(130, d=12, general=7)
    threshold = 1e-3
    P = nullspace_projector(K_g, threshold)

    eigenvalues = np.linalg.eigvalsh(K_g.numpy())
    expected_rank = int(np.sum(eigenvalues < threshold * eigenvalues[-1]))
    assert expected_rank == 5
    assert P.shape == (12, 12)
    assert P.dtype == torch.float64
    torch.testing.assert_close(P, P.mT, rtol=0, atol=1e-14)
    torch.testing.assert_close(P @ P, P, rtol=0, atol=1e-12)
    assert torch.linalg.matrix_norm(P @ K_g @ P) <= 1e-10 * torch.linalg.matrix_norm(K_g)
    assert int(torch.linalg.matrix_rank(P)) == expected_rank
    assert float(torch.trace(P)) == pytest.approx(expected_rank)


def test_basis_orthonormal_with_small_eigenvalues():
    generator = torch.Generator().manual_seed(140)
    Q_full, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    spectrum = torch.tensor([1e-8, 5e-4, 2e-3, 0.1, 1.0, 10.0], dtype=torch.float64)
    K_g = Q_full @ torch.diag(spectrum) @ Q_full.mT

    basis, eigenvalues = nullspace_basis(K_g, 1e-4)
    assert basis.shape == (6, 2)
    torch.testing.assert_close(eigenvalues, spectrum[:2], rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(basis.mT @ basis, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(K_g @ basis, basis * eigenvalues, rtol=0, atol=1e-12)


def test_basis_of_zero_matrix_is_whole_space():
    basis, eigenvalues = nullspace_basis(torch.zeros(4, 4), 1e-3)

    assert basis.shape == (4, 4)
    torch.testing.assert_close(eigenvalues, torch.zeros(4, dtype=torch.float64))


def test_projector_rejects_threshold_leaving_nothing():
    K_g = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))

    with pytest.raises(ConfigurationError, match=r"null_threshold=0\.001 .*0\.25 times the largest.*above 0\.25"):
        nullspace_projector(K_g, 1e-3)
    with pytest.raises(ConfigurationError, match="null_threshold=0.001"):
        solve_edit(torch.ones(3, 4), torch.ones(2, 4), K_g=K_g, constraint="nullspace")


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.0, float("nan")])
def test_basis_rejects_invalid_threshold(threshold):
    with pytest.raises(ConfigurationError, match="null_threshold"):
        nullspace_basis(torch.eye(3), threshold)


# Errors


def test_shape_mismatch_errors():
    X, R, _, K_g = make_problem(150)

    with pytest.raises(ShapeError, match=r"X has 20 columns but R has 19"):
        solve_edit(X, R[:, :19])
    with pytest.raises(ShapeError, match=r"K_g has shape \(7, 7\) but X has 8 rows"):
        solve_edit(X, R, K_g=K_g[:7, :7], alpha=1.0)
    with pytest.raises(ShapeError, match=r"K_g must be square"):
        solve_edit(X, R, K_g=K_g[:, :7], alpha=1.0)
    with pytest.raises(ShapeError, match=r"X must be a 2-D matrix, got shape \(8,\)"):
        solve_edit(X[:, 0], R)
    with pytest.raises(ShapeError, match=r"R must be non-empty"):
        solve_edit(X, R[:0])
    with pytest.raises(ShapeError, match=r"D has shape \(6, 7\).*must have shape \(6, 8\)"):
        edit_objective(torch.zeros(6, 7), X, R)


@pytest.mark.parametrize(("argument", "bad_value"), [("X", math.nan), ("R", math.inf), ("K_g", -math.inf)])
def test_non_finite_input_names_argument(argument, bad_value):
    X, R, _, K_g = make_problem(160)
    inputs = {"X": X.clone(), "R": R.clone(), "K_g": K_g.clone()}
    inputs[argument][1, 1] = bad_value

    with pytest.raises(NumericalError, match=rf"^{argument} contains NaN or Inf"):
        solve_edit(inputs["X"], inputs["R"], K_g=inputs["K_g"], alpha=1.0)


def test_overflow_on_cast_reported():
    X = torch.full((3, 4), 1e300, dtype=torch.float64)

    with pytest.raises(NumericalError, match=r"X contains NaN or Inf values \(checked in torch\.float32\)"):
        solve_edit(X, torch.ones(2, 4), dtype=torch.float32)


def test_singular_system_without_ridge_raises():
    # n < d and no K_g, so X X^T has rank 3 < 8.
    X, R, _, _ = make_problem(170, n=3)

    with pytest.raises(NumericalError, match=r"Increase lam \(now 0\) or alpha"):
        solve_edit(X, R, lam=0.0)


def test_nearly_singular_system_fails_condition_check():
    # Two rows of X differ by 1e-7, so the Cholesky factorization succeeds but cond(C) is near 1e14.
    X, R, _, _ = make_problem(175)
    X[1] = X[0] + 1e-7 * torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    with pytest.raises(NumericalError, match=r"estimated condition number \S+ exceeds max_condition=1e\+12"):
        solve_edit(X, R, lam=0.0)
    solution = solve_edit(X, R, lam=1e-3)
    assert solution.condition_number < 1e12


def test_ill_conditioned_system_names_condition_number():
    X, R, _, _ = make_problem(180)

    with pytest.raises(NumericalError, match=r"estimated condition number \S+ exceeds max_condition=2"):
        solve_edit(X, R, lam=1e-3, max_condition=2.0)


@pytest.mark.parametrize("rank", [0, -1, 7])
def test_rank_out_of_range(rank):
    X, R, _, _ = make_problem(190)

    expected = rf"rank={rank} is out of range. It must be between 1 and min\(k=6, d=8\) = 6"
    with pytest.raises(ConfigurationError, match=expected):
        solve_edit(X, R, rank=rank)


def test_rank_must_be_integer():
    X, R, _, _ = make_problem(200)

    with pytest.raises(ConfigurationError, match="rank must be an integer"):
        solve_edit(X, R, rank=2.0)
    with pytest.raises(ConfigurationError, match="rank must be an integer"):
        solve_edit(X, R, rank=True)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("alpha", -1.0), ("lam", -1e-6), ("lam_relative", -0.1), ("alpha", math.inf), ("lam", math.nan)],
)
def test_invalid_scalar_rejected(keyword, value):
    X, R, _, K_g = make_problem(210)

    with pytest.raises(ConfigurationError, match=keyword):
        solve_edit(X, R, K_g=K_g, **{keyword: value})


def test_invalid_configuration_rejected():
    X, R, _, K_g = make_problem(220)

    with pytest.raises(ConfigurationError, match=r"constraint='hard' is invalid"):
        solve_edit(X, R, K_g=K_g, constraint="hard")
    with pytest.raises(ConfigurationError, match=r"alpha=1\.0 requires K_g"):
        solve_edit(X, R, alpha=1.0)
    with pytest.raises(ConfigurationError, match=r'constraint="nullspace" requires K_g'):
        solve_edit(X, R, constraint="nullspace")
    with pytest.raises(ConfigurationError, match=r"dtype=torch\.float16 is not supported"):
        solve_edit(X, R, dtype=torch.float16)
    with pytest.raises(ConfigurationError, match=r"K_g is not symmetric"):
        solve_edit(X, R, K_g=K_g + torch.triu(torch.ones(8, 8, dtype=torch.float64)), alpha=1.0)
    with pytest.raises(ConfigurationError, match="max_condition"):
        solve_edit(X, R, max_condition=0.5)


def test_slightly_asymmetric_gram_is_symmetrized():
    X, R, _, K_g = make_problem(225)
    noise = 1e-4 * torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    antisymmetric = (noise - noise.mT) * float(K_g.abs().max())

    perturbed = solve_edit(X, R, K_g=K_g + antisymmetric, alpha=2.0, lam=0.1)
    reference = solve_edit(X, R, K_g=K_g, alpha=2.0, lam=0.1)
    torch.testing.assert_close(perturbed.delta, reference.delta, rtol=1e-12, atol=1e-13)


# Dtype and device


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_give_float64(input_dtype):
    X, R, _, K_g = make_problem(230)
    solution = solve_edit(X.to(input_dtype), R.to(input_dtype), K_g=K_g.to(input_dtype), alpha=0.5, lam=0.1, rank=3)

    for tensor in (solution.left, solution.right, solution.singular_values, solution.delta):
        assert tensor.dtype == torch.float64
        assert tensor.device == X.device
    reference = solve_edit(
        X.to(input_dtype).double(), R.to(input_dtype).double(), K_g=K_g.to(input_dtype).double(), alpha=0.5,
        lam=0.1, rank=3,
    )
    torch.testing.assert_close(solution.delta, reference.delta, rtol=1e-12, atol=1e-12)


def test_float32_computation_dtype():
    X, R, _, K_g = make_problem(240)
    solution = solve_edit(X, R, K_g=K_g, alpha=0.5, lam=0.1, dtype=torch.float32)
    reference = solve_edit(X, R, K_g=K_g, alpha=0.5, lam=0.1)

    assert solution.delta.dtype == torch.float32
    torch.testing.assert_close(solution.delta, reference.delta.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_results_on_cuda_device():
    X, R, _, K_g = make_problem(250, d=12, general=7)
    device = torch.device("cuda")
    for constraint in ("penalty", "nullspace"):
        solution = solve_edit(
            X.float().to(device), R.to(device), K_g=K_g.cpu(), alpha=0.5, lam=0.1, rank=3, constraint=constraint
        )
        reference = solve_edit(X.float().double(), R, K_g=K_g, alpha=0.5, lam=0.1, rank=3, constraint=constraint)

        for tensor in (solution.left, solution.right, solution.singular_values):
            assert tensor.device.type == "cuda"
            assert tensor.dtype == torch.float64
        torch.testing.assert_close(solution.delta.cpu(), reference.delta, rtol=1e-9, atol=1e-10)
        assert solution.objective == pytest.approx(reference.objective, rel=1e-9)


def _factors_with_spectrum(a: int, b: int, r: int, values: list[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (a, r) and (r, b) whose product has the given singular values (padded with zeros)."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(a, len(values), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(b, len(values), generator=generator, dtype=torch.float64))
    product = u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T
    mixing = torch.randn(len(values), r, generator=generator, dtype=torch.float64)
    left = u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ mixing
    right = torch.linalg.pinv(mixing) @ v.T
    torch.testing.assert_close(left @ right, product, rtol=0, atol=1e-10)
    return left, right


@pytest.mark.parametrize(("a", "b", "r", "q"), [(30, 20, 12, 1), (30, 20, 12, 5), (8, 40, 16, 3), (25, 25, 6, 6)])
def test_compact_factors_finds_the_rank(a: int, b: int, r: int, q: int) -> None:
    values = [float(2.0**-i) for i in range(q)]
    left, right = _factors_with_spectrum(a, b, r, values, seed=a + b + r + q)
    new_left, new_right = compact_factors(left, right)
    assert new_left.shape == (a, q)
    assert new_right.shape == (q, b)
    torch.testing.assert_close(new_left @ new_right, left @ right, rtol=0, atol=1e-10)
    dense = torch.linalg.svdvals(left @ right)[:q]
    torch.testing.assert_close(torch.linalg.svdvals(new_left @ new_right)[:q], dense, rtol=1e-9, atol=1e-12)


def test_compact_factors_drops_below_rtol() -> None:
    left, right = _factors_with_spectrum(20, 15, 10, [1.0, 1e-3, 1e-12], seed=3)
    kept_left, kept_right = compact_factors(left, right, rtol=1e-10)
    assert kept_left.shape[1] == 2
    cut_left, cut_right = compact_factors(left, right, rtol=1e-2)
    assert cut_left.shape[1] == 1
    # Eckart-Young: the spectral error of the rank-1 product is the first dropped singular value.
    error = torch.linalg.matrix_norm(cut_left @ cut_right - left @ right, ord=2)
    assert abs(float(error) - 1e-3) < 1e-9


def test_compact_factors_of_zero_keeps_one_component() -> None:
    left, right = compact_factors(torch.zeros(5, 3, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64))
    assert left.shape == (5, 1)
    assert right.shape == (1, 4)
    assert float((left @ right).abs().max()) == 0.0


def test_compact_factors_keeps_dtype() -> None:
    left, right = compact_factors(torch.randn(6, 4), torch.randn(4, 5))
    assert left.dtype == torch.float32
    assert right.dtype == torch.float32


def test_compact_factors_rejects_bad_input() -> None:
    with pytest.raises(ShapeError, match=r"\(6, 4\) and \(3, 5\)"):
        compact_factors(torch.randn(6, 4), torch.randn(3, 5))
    with pytest.raises(ShapeError, match=r"\(0, 3\)"):
        compact_factors(torch.randn(0, 3), torch.randn(3, 5))
    with pytest.raises(ShapeError, match=r"\(6, 0\)"):
        compact_factors(torch.randn(6, 0), torch.randn(0, 5))
    with pytest.raises(ConfigurationError, match="int64"):
        compact_factors(torch.ones(6, 4, dtype=torch.int64), torch.ones(4, 5, dtype=torch.int64))
    for rtol in (-1.0, 1.0, float("nan")):
        with pytest.raises(ConfigurationError, match="rtol"):
            compact_factors(torch.randn(6, 4), torch.randn(4, 5), rtol=rtol)
