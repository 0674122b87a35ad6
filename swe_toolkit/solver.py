"""Closed-form solver for low-rank, regularized edits of a linear map.

An edit is a matrix D (k x d) that is added to a weight W (k x d). The solver takes only the
edit inputs X (d x n), the expected output change R (k x n) on those inputs (for example the
target output minus W X) and the second moment K_g = X_g X_g^T (d x d) of general inputs that
the edit should leave alone. It therefore has no model dependency.

Two constraint forms are supported. ``"penalty"`` adds ``alpha * ||D X_g||_F^2`` to the
least-squares objective. ``"nullspace"`` restricts the rows of D to the span of the eigenvectors
of K_g with small eigenvalues, so that D X_g is nearly zero by construction.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from swe_toolkit.errors import ConfigurationError, NumericalError, ShapeError

__all__ = [
    "EditSolution",
    "compact_factors",
    "edit_objective",
    "nullspace_basis",
    "nullspace_projector",
    "solve_edit",
]

logger = logging.getLogger(__name__)

CONSTRAINTS = ("penalty", "nullspace")
SUPPORTED_DTYPES = (torch.float32, torch.float64)

# K_g is symmetrized before use. A larger relative asymmetry, max|K - K^T| / max|K|, means the
# argument is not a second moment. The bound leaves room for K_g accumulated in bfloat16,
# whose relative rounding error is 2**-8.
_SYMMETRY_TOLERANCE = 1e-2

# Iterations of the power and inverse power methods in the condition estimate. Each costs
# O(d^2), which is small next to the O(d^3) Cholesky factorization.
_CONDITION_ITERATIONS = 30


@dataclass(frozen=True)
class EditSolution:
    """Rank-r edit D = left @ right, with diagnostics of the solve.

    All tensors have the solver's ``dtype`` and the device of X. The form of the factors depends
    on the shape of the whitened cross term M (k x d_eff), as ``left`` and ``right`` describe.
    Only the product left @ right is fixed by the problem, and it is unique only when the r-th
    singular value of M is larger than the (r+1)-th.
    """

    left: Tensor
    """(k, r) factor.

    For r < min(k, d_eff) it is M V_r when k >= d_eff and U_r when k < d_eff, where U_r and V_r
    hold the top r left and right singular vectors of M in descending order. For
    r = min(k, d_eff) it is M L^{-1}, which is the dense D in the penalty form, when k >= d_eff
    and the identity when k < d_eff.
    """
    right: Tensor
    """(r, d) factor, multiplied by Q^T in the nullspace form.

    For r < min(k, d_eff) it is V_r^T L^{-1} when k >= d_eff and U_r^T M L^{-1} when k < d_eff.
    For r = min(k, d_eff) it is the identity (Q^T in the nullspace form) when k >= d_eff and the
    dense D when k < d_eff.
    """
    singular_values: Tensor
    """(min(k, d_eff),) all singular values of M in descending order, for rank plots.

    d_eff is d in the penalty form and the nullspace dimension m in the nullspace form. The values
    are square roots of the eigenvalues of M^T M or M M^T, so their absolute error is about
    eps * sigma_1^2 / sigma_i. Values below about sqrt(eps) * sigma_1, which is 1.5e-8 * sigma_1 in
    float64 and 3.5e-4 * sigma_1 in float32, are not resolved and may come out as 0.
    """
    objective: float
    """Value of the full objective at D, computed in float64."""
    baseline_objective: float
    """Value of the objective at D = 0, which is ||R||_F^2."""
    condition_number: float
    """Lower-bound estimate of cond(C) for the factorized system matrix C."""
    constraint: str
    """Constraint form, ``"penalty"`` or ``"nullspace"``."""
    lam: float
    """Absolute ridge weight used, after ``lam_relative`` was resolved."""

    @property
    def delta(self) -> Tensor:
        """Dense (k, d) edit D = left @ right."""
        return self.left @ self.right

    @property
    def rank(self) -> int:
        """Number r of kept singular components, an upper bound on the numerical rank of D."""
        return int(self.left.shape[1])


def solve_edit(
    X: Tensor,
    R: Tensor,
    *,
    K_g: Tensor | None = None,
    alpha: float = 0.0,
    lam: float = 1e-4,
    lam_relative: float | None = None,
    rank: int | None = None,
    constraint: str = "penalty",
    null_threshold: float = 1e-3,
    dtype: torch.dtype = torch.float64,
    max_condition: float = 1e12,
) -> EditSolution:
    """Solve for the best rank-r edit D (k x d) in closed form.

    The edit minimizes

        f(D) = ||D X - R||_F^2 + alpha * tr(D K_g D^T) + lam * ||D||_F^2  subject to rank(D) <= r,

    which is reduced-rank ridge regression. Let C = X X^T + alpha K_g + lam I = L L^T be the
    Cholesky factorization and M = R X^T L^{-T}. Expanding the square gives
    f(D) = tr(D C D^T) - 2 tr(D X R^T) + ||R||_F^2. Because L M^T = X R^T, this equals
    ||D L - M||_F^2 + ||R||_F^2 - ||M||_F^2. L is invertible, so E = D L has the same rank as D
    and ranges over all k x d matrices of rank at most r. By the Eckart-Young theorem the best
    such E is the truncated SVD [M]_r = U_r S_r V_r^T, so D = [M]_r L^{-1} and the minimum is
    ||R||_F^2 minus the sum of the r largest squared singular values of M.

    The solver never computes the SVD of M. It writes [M]_r as M V_r V_r^T or U_r U_r^T M and
    takes V_r or U_r from the eigendecomposition of the smaller Gram matrix, M^T M or M M^T.
    For r = min(k, d) nothing is truncated, so D = M L^{-1} directly.

    In the nullspace form, D = D'' Q^T where the columns of Q (d x m) are the orthonormal
    eigenvectors of K_g with eigenvalues below ``null_threshold`` times the largest one.
    D'' solves the same problem with Z = Q^T X in place of X and Q^T K_g Q in place of K_g.
    The ridge term keeps its form because ||D''Q^T||_F = ||D''||_F.

    Args:
        X: (d, n) edit inputs, one column per input. Any real dtype.
        R: (k, n) wanted output change for each input column.
        K_g: (d, d) symmetric positive semidefinite second moment X_g X_g^T of general inputs.
            Required when ``alpha > 0`` or ``constraint == "nullspace"``.
        alpha: Weight of the penalty tr(D K_g D^T) = ||D X_g||_F^2, at least 0.
        lam: Absolute ridge weight on ||D||_F^2, at least 0, in the units of X X^T.
        lam_relative: If given, replaces ``lam`` by ``lam_relative * trace(G) / d_eff``, the
            mean eigenvalue of the Gram matrix G = X X^T + alpha K_g times ``lam_relative``.
            In the nullspace form G is the reduced matrix Z Z^T + alpha Q^T K_g Q and d_eff = m.
        rank: Maximum rank r of D, from 1 to min(k, d_eff). None keeps all min(k, d_eff).
        constraint: ``"penalty"`` or ``"nullspace"``.
        null_threshold: Relative eigenvalue bound, in (0, 1), that selects the nullspace of K_g.
        dtype: Computation and result dtype, torch.float32 or torch.float64.
        max_condition: Largest accepted estimate of cond(C).

    Returns:
        The factored solution, in ``dtype`` on the device of X.

    Raises:
        ShapeError: The shapes of X, R and K_g do not fit together.
        NumericalError: An input contains NaN or Inf, the Cholesky factorization of C fails,
            or the condition estimate of C exceeds ``max_condition``.
        ConfigurationError: A scalar argument, the rank, the constraint or the dtype is invalid,
            or no eigenvalue of K_g is below ``null_threshold`` in the nullspace form.
    """
    _check_dtype(dtype)
    if constraint not in CONSTRAINTS:
        raise ConfigurationError(
            f"constraint={constraint!r} is invalid. Expected one of {', '.join(map(repr, CONSTRAINTS))}"
        )
    alpha = _check_nonnegative("alpha", alpha)
    lam = _check_nonnegative("lam", lam)
    if lam_relative is not None:
        lam_relative = _check_nonnegative("lam_relative", lam_relative)
    max_condition = _check_max_condition(max_condition)

    X, R, K = _validate_problem(X, R, K_g, dtype)
    if alpha > 0 and K is None:
        raise ConfigurationError(f"alpha={alpha} requires K_g, but K_g is None. Pass K_g or set alpha=0")

    if constraint == "penalty":
        system_name = "C = X X^T + alpha K_g + lam I"
        basis = None
        Z = X
        gram = X @ X.mT
        if K is not None and alpha > 0:
            gram = gram + alpha * K
    else:
        if K is None:
            raise ConfigurationError('constraint="nullspace" requires K_g, but K_g is None. Pass K_g')
        system_name = "C = Z Z^T + alpha Q^T K_g Q + lam I in the nullspace of K_g"
        basis, kept_eigenvalues = _nullspace_basis_validated(K, null_threshold)
        Z = basis.mT @ X
        gram = Z @ Z.mT
        if alpha > 0:
            # Q^T K_g Q is diagonal with the kept eigenvalues. Clamping drops the small negative
            # eigenvalues that rounding produces for a semidefinite K_g.
            gram = gram + alpha * torch.diag(kept_eigenvalues.clamp_min(0))

    d, n = X.shape
    k = R.shape[0]
    d_eff = gram.shape[0]
    r = _resolve_rank(rank, k, d_eff, constraint)
    if lam_relative is not None:
        lam = lam_relative * float(torch.trace(gram)) / d_eff

    system = gram + lam * torch.eye(d_eff, dtype=dtype, device=X.device)
    cholesky = _cholesky(system, system_name, alpha=alpha, lam=lam)
    condition = _estimate_condition(system, cholesky)
    if condition > max_condition:
        raise NumericalError(
            f"{system_name} is ill-conditioned: estimated condition number {condition:.3g} "
            f"exceeds max_condition={max_condition:.3g}. Increase lam (now {lam:.3g}) or alpha (now {alpha:.3g}), "
            "or pass lam_relative"
        )

    left, right, singular_values = _rank_r_factors(cholesky, Z @ R.mT, r, basis)
    objective = _objective(left, X, R, K, alpha, lam, right=right)
    baseline = float(torch.sum(R.to(torch.float64) ** 2))
    logger.debug(
        "solve_edit: constraint=%s d=%d d_eff=%d k=%d n=%d rank=%d alpha=%.3g lam=%.3g cond~%.3g "
        "objective %.6g -> %.6g",
        constraint,
        d,
        d_eff,
        k,
        n,
        r,
        alpha,
        lam,
        condition,
        baseline,
        objective,
    )
    return EditSolution(
        left=left,
        right=right,
        singular_values=singular_values,
        objective=objective,
        baseline_objective=baseline,
        condition_number=condition,
        constraint=constraint,
        lam=lam,
    )


def edit_objective(
    D: Tensor,
    X: Tensor,
    R: Tensor,
    *,
    K_g: Tensor | None = None,
    alpha: float = 0.0,
    lam: float = 0.0,
) -> float:
    """Compute ||D X - R||_F^2 + alpha * tr(D K_g D^T) + lam * ||D||_F^2 in float64.

    Shapes are D (k, d), X (d, n), R (k, n) and K_g (d, d). The computation runs on the device
    of X. Raises ShapeError, NumericalError or ConfigurationError like :func:`solve_edit`.
    """
    alpha = _check_nonnegative("alpha", alpha)
    lam = _check_nonnegative("lam", lam)
    X, R, K = _validate_problem(X, R, K_g, torch.float64)
    if alpha > 0 and K is None:
        raise ConfigurationError(f"alpha={alpha} requires K_g, but K_g is None. Pass K_g or set alpha=0")
    D = _as_matrix("D", D, torch.float64, X.device)
    expected = (R.shape[0], X.shape[0])
    if tuple(D.shape) != expected:
        raise ShapeError(
            f"D has shape {tuple(D.shape)} but R has {expected[0]} rows and X has {expected[1]} rows, "
            f"so D must have shape {expected}"
        )
    return _objective(D, X, R, K, alpha, lam)


def nullspace_basis(
    K_g: Tensor, threshold: float, *, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Compute an orthonormal basis of the eigenvectors of K_g with small eigenvalues.

    An eigenvector is kept when its eigenvalue is below ``threshold`` times the largest
    eigenvalue. When K_g has no positive eigenvalue, for example when it is zero, every
    direction is kept.

    Args:
        K_g: (d, d) symmetric positive semidefinite matrix.
        threshold: Relative eigenvalue bound in (0, 1).
        dtype: Computation and result dtype, torch.float32 or torch.float64.

    Returns:
        Q of shape (d, m) with orthonormal columns, and the matching (m,) eigenvalues in
        ascending order, both in ``dtype`` on the device of K_g.

    Raises:
        ConfigurationError: No eigenvalue is below the threshold, or the threshold is invalid.
    """
    _check_dtype(dtype)
    K = _as_gram("K_g", K_g, None, dtype, _device_of("K_g", K_g))
    return _nullspace_basis_validated(K, threshold)


def nullspace_projector(K_g: Tensor, threshold: float, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Compute the (d, d) orthogonal projector P = Q Q^T onto the nullspace from :func:`nullspace_basis`."""
    basis, _ = nullspace_basis(K_g, threshold, dtype=dtype)
    return basis @ basis.mT


def _nullspace_basis_validated(K: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    threshold = _check_threshold(threshold)
    eigenvalues, eigenvectors = torch.linalg.eigh(K)
    largest = float(eigenvalues[-1])
    if largest <= 0:
        logger.debug("nullspace_basis: K_g has no positive eigenvalue, so every direction is kept")
        return eigenvectors, eigenvalues

    kept_count = int(torch.count_nonzero(eigenvalues < threshold * largest))
    if kept_count == 0:
        smallest_relative = float(eigenvalues[0]) / largest
        raise ConfigurationError(
            f"null_threshold={threshold:g} leaves no direction: the smallest eigenvalue of K_g is "
            f"{smallest_relative:.3g} times the largest. Pass a null_threshold above {smallest_relative:.3g} "
            'or use constraint="penalty"'
        )
    logger.debug("nullspace_basis: kept %d of %d directions at threshold %g", kept_count, K.shape[0], threshold)
    # eigh returns ascending eigenvalues, so the kept directions come first.
    return eigenvectors[:, :kept_count], eigenvalues[:kept_count]


def _rank_r_factors(
    cholesky: Tensor, cross: Tensor, rank: int, basis: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Factor the optimal edit [M]_r L^{-1} as left @ right, where M = cross^T L^{-T}.

    ``cross`` is Z R^T (d_eff x k). When ``basis`` Q is given, right is multiplied by Q^T. Also
    returns all min(k, d_eff) singular values of M in descending order. :class:`EditSolution`
    describes the form of each factor.

    The eigendecomposition of the Gram matrix of size min(k, d_eff) replaces a thin SVD of M.
    For M of size 2048 x 1536 on one thread of a busy 2-core Xeon, eigh took 0.94 s and
    eigvalsh 0.26 s, while torch.linalg.svd took 3.7 s and svdvals 2.5 s.

    The Gram matrix squares the condition number of M, so the computed top-r subspace can be
    inaccurate when sigma_r^2 - sigma_{r+1}^2 is not large next to eps * sigma_1^2. The
    objective stays optimal up to rounding even then. eigh is backward stable, so the
    computed basis captures all but O(r * eps * sigma_1^2) of the optimal sum of squared
    singular values, and an SVD of M rounds the objective by the same order. When sigma_r and
    sigma_{r+1} are close, the optimal D itself is ill-determined for any method.
    """
    # whitened = L^{-1} Z R^T = M^T, from one triangular solve.
    whitened = torch.linalg.solve_triangular(cholesky, cross, upper=False)
    d_eff, k = whitened.shape
    gram = whitened @ whitened.mT if k >= d_eff else whitened.mT @ whitened

    if rank == min(k, d_eff):
        # Nothing is truncated, so D = M L^{-1} and only the singular values need the Gram matrix.
        eigenvalues = torch.linalg.eigvalsh(gram)
        edit = torch.linalg.solve_triangular(cholesky, whitened.mT, upper=False, left=False)
        if k < d_eff:
            left = torch.eye(k, dtype=edit.dtype, device=edit.device)
            right = edit if basis is None else edit @ basis.mT
        else:
            left = edit
            right = torch.eye(d_eff, dtype=edit.dtype, device=edit.device) if basis is None else basis.mT.clone()
        return left, right, _singular_values_from_gram(eigenvalues)

    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    # eigh sorts ascending, so the top r eigenvectors are the last r columns.
    top = eigenvectors[:, -rank:].flip(-1)
    if k >= d_eff:
        # [M]_r L^{-1} = (M V_r) (V_r^T L^{-1}).
        left = whitened.mT @ top
        right = torch.linalg.solve_triangular(cholesky, top.mT, upper=False, left=False)
    else:
        # [M]_r L^{-1} = U_r (U_r^T M L^{-1}), where U_r^T M = (M^T U_r)^T.
        left = top
        right = torch.linalg.solve_triangular(cholesky, (whitened @ top).mT, upper=False, left=False)
    if basis is not None:
        right = right @ basis.mT
    return left, right, _singular_values_from_gram(eigenvalues)


def compact_factors(left: Tensor, right: Tensor, rtol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Rewrite the product ``left @ right`` with the smallest inner dimension it needs.

    A rank bound r of :func:`solve_edit` is only an upper bound: when the target ``R`` has rank q
    below r, the optimal edit has rank at most q too, yet its factors keep r columns. This
    function returns factors ``(a, m)`` and ``(m, b)`` whose product equals ``left @ right`` up to
    the dropped singular values, which are at most ``rtol`` times the largest. ``m`` is at least 1,
    so an all-zero product comes back as one zero component.

    The singular values come from an SVD of the small core of two thin QR factorizations, so the
    product itself is never formed and they are accurate to about ``eps`` times the largest.
    Computed in float64; the factors are returned in the dtype of ``left``.

    Args:
        left: ``(a, r)`` factor.
        right: ``(r, b)`` factor.
        rtol: relative threshold; singular values at or below ``rtol * sigma_1`` are dropped.

    Raises:
        ShapeError: a factor is not a matrix, has a zero dimension, or the inner dimensions differ.
        ConfigurationError: a factor is not floating point, or ``rtol`` is outside ``[0, 1)``.
    """
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0] or 0 in (*left.shape, right.shape[1]):
        raise ShapeError(
            f"factors must be (a, r) and (r, b) with a, r, b >= 1, got {tuple(left.shape)} and {tuple(right.shape)}"
        )
    if not (left.is_floating_point() and right.is_floating_point()):
        raise ConfigurationError(f"factors must be floating point, got {left.dtype} and {right.dtype}")
    if not math.isfinite(rtol) or not 0 <= rtol < 1:
        raise ConfigurationError(f"rtol must be a number in [0, 1), got {rtol!r}")
    dtype = left.dtype
    q_left, r_left = torch.linalg.qr(left.to(torch.float64))
    q_right, r_right = torch.linalg.qr(right.to(torch.float64).mT)
    u, singular_values, vh = torch.linalg.svd(r_left @ r_right.mT)
    largest = float(singular_values[0]) if singular_values.numel() else 0.0
    num_kept = max(1, int((singular_values > rtol * largest).sum())) if largest > 0 else 1
    new_left = q_left @ (u[:, :num_kept] * singular_values[:num_kept])
    new_right = vh[:num_kept] @ q_right.mT
    return new_left.to(dtype), new_right.to(dtype)


def _singular_values_from_gram(eigenvalues: Tensor) -> Tensor:
    """Turn the ascending eigenvalues of M^T M or M M^T into descending singular values of M."""
    # Rounding can make eigenvalues of a semidefinite matrix slightly negative.
    return eigenvalues.flip(0).clamp_min(0).sqrt()


def _objective(
    left: Tensor,
    X: Tensor,
    R: Tensor,
    K: Tensor | None,
    alpha: float,
    lam: float,
    *,
    right: Tensor | None = None,
) -> float:
    """Compute the objective in float64 at D = left @ right, or at D = left when right is None."""
    left, X, R = left.to(torch.float64), X.to(torch.float64), R.to(torch.float64)
    if right is None:
        D = left
    else:
        right = right.to(torch.float64)
        D = left @ right

    value = torch.sum((_multiply_edit(D, left, right, X) - R) ** 2)
    if K is not None and alpha > 0:
        # tr(D K D^T) without forming the k x k product.
        value = value + alpha * torch.sum(_multiply_edit(D, left, right, K.to(torch.float64)) * D)
    if lam > 0:
        value = value + lam * torch.sum(D**2)
    return float(value)


def _multiply_edit(D: Tensor, left: Tensor, right: Tensor | None, other: Tensor) -> Tensor:
    """Compute D @ other, as left @ (right @ other) when that takes fewer multiplications."""
    if right is None:
        return D @ other
    k, r = left.shape
    d = right.shape[1]
    if r * (k + d) < k * d:
        return left @ (right @ other)
    return D @ other


def _cholesky(system: Tensor, system_name: str, *, alpha: float, lam: float) -> Tensor:
    """Factor the system matrix as L L^T, raising NumericalError when it is not positive definite."""
    cholesky, info = torch.linalg.cholesky_ex(system)
    failed_order = int(info)
    if failed_order > 0 or not bool(torch.isfinite(cholesky).all()):
        where = f" at leading minor {failed_order}" if failed_order > 0 else ""
        raise NumericalError(
            f"Cholesky factorization of {system_name} failed{where}, so C is not positive "
            f"definite (size {system.shape[0]}). Increase lam (now {lam:.3g}) or alpha (now {alpha:.3g}), "
            "or pass lam_relative"
        )
    return cholesky


def _estimate_condition(system: Tensor, cholesky: Tensor) -> float:
    """Estimate cond(C) from below, given C and its Cholesky factor L.

    The estimate divides the power-method estimate of the largest eigenvalue by the
    inverse-power estimate of the smallest. In exact arithmetic Rayleigh quotients never exceed
    the largest eigenvalue of C or of C^{-1}, so the ratio is at most cond(C). Both iterations start from a
    fixed random vector so the estimate is reproducible.
    """
    size = system.shape[0]
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(size, 1, generator=generator, dtype=system.dtype).to(system.device)
    start = start / torch.linalg.vector_norm(start)

    vector = start
    for _ in range(_CONDITION_ITERATIONS):
        product = system @ vector
        vector = product / torch.linalg.vector_norm(product)
    largest = float(vector.mT @ system @ vector)

    vector = start
    for _ in range(_CONDITION_ITERATIONS):
        product = torch.cholesky_solve(vector, cholesky)
        vector = product / torch.linalg.vector_norm(product)
    # 1 / (v^T C^{-1} v) >= lambda_min, computed as 1 / ||L^{-1} v||^2 to stay accurate near singularity.
    half_solve = torch.linalg.solve_triangular(cholesky, vector, upper=False)
    smallest = 1.0 / float(torch.sum(half_solve**2))

    estimate = largest / smallest
    if not math.isfinite(estimate):
        return math.inf
    return estimate


def _validate_problem(
    X: Tensor, R: Tensor, K_g: Tensor | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check shapes and values of X, R and K_g and convert them to ``dtype`` on the device of X."""
    device = _device_of("X", X)
    X = _as_matrix("X", X, dtype, device)
    R = _as_matrix("R", R, dtype, device)
    if R.shape[1] != X.shape[1]:
        raise ShapeError(
            f"X has {X.shape[1]} columns but R has {R.shape[1]}, and both need one column per input"
        )
    K = None if K_g is None else _as_gram("K_g", K_g, X.shape[0], dtype, device)
    return X, R, K


def _device_of(name: str, value: object) -> torch.device:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value.device


def _as_matrix(name: str, value: object, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 2:
        raise ShapeError(f"{name} must be a 2-D matrix, got shape {tuple(value.shape)}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ShapeError(f"{name} must be non-empty, got shape {tuple(value.shape)}")
    if value.is_complex():
        raise ConfigurationError(f"{name} has complex dtype {value.dtype}, but the solver requires real values")
    converted = value.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(converted).all()):
        raise NumericalError(f"{name} contains NaN or Inf values (checked in {dtype})")
    return converted


def _as_gram(name: str, value: object, size: int | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Validate a square symmetric matrix and return its symmetrized copy."""
    matrix = _as_matrix(name, value, dtype, device)
    if matrix.shape[0] != matrix.shape[1]:
        raise ShapeError(f"{name} must be square, got shape {tuple(matrix.shape)}")
    if size is not None and matrix.shape[0] != size:
        raise ShapeError(
            f"{name} has shape {tuple(matrix.shape)} but X has {size} rows, so {name} must be {size} x {size}"
        )

    scale = float(matrix.abs().max())
    asymmetry = float((matrix - matrix.mT).abs().max())
    if asymmetry > _SYMMETRY_TOLERANCE * scale:
        raise ConfigurationError(
            f"{name} is not symmetric: max |K - K^T| is {asymmetry:.3g}, {asymmetry / scale:.3g} times max |K|. "
            "Pass the second moment X_g X_g^T of the general inputs"
        )
    return (matrix + matrix.mT) / 2


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ConfigurationError(f"dtype={dtype} is not supported. Use torch.float64 or torch.float32")


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name} must be a real number, got {value!r}")
    converted = float(value)
    if math.isnan(converted):
        raise ConfigurationError(f"{name} must be a number, got NaN")
    return converted


def _check_nonnegative(name: str, value: object) -> float:
    converted = _check_real(name, value)
    if not (0 <= converted < math.inf):
        raise ConfigurationError(f"{name}={value!r} is invalid. It must be finite and at least 0")
    return converted


def _check_threshold(threshold: object) -> float:
    converted = _check_real("null_threshold", threshold)
    if not (0 < converted < 1):
        raise ConfigurationError(f"null_threshold={threshold!r} is invalid. It must lie strictly between 0 and 1")
    return converted


def _check_max_condition(max_condition: object) -> float:
    converted = _check_real("max_condition", max_condition)
    if converted < 1:
        raise ConfigurationError(
            f"max_condition={max_condition!r} is invalid because a condition number is at least 1. "
            "Use math.inf to disable the check"
        )
    return converted


def _resolve_rank(rank: object, k: int, d_eff: int, constraint: str) -> int:
    full = min(k, d_eff)
    if rank is None:
        return full
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise ConfigurationError(f"rank must be an integer or None, got {rank!r}")
    if not 1 <= int(rank) <= full:
        limit = f"min(k={k}, d={d_eff})" if constraint == "penalty" else f"min(k={k}, nullspace dimension m={d_eff})"
        raise ConfigurationError(f"rank={rank} is out of range. It must be between 1 and {limit} = {full}")
    return int(rank)
