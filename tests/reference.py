"""An independent NumPy (float64) reference of docs/method.md, for the tests.

The network is `Dense(h) → BatchNormalization → ReLU → Dense(c)` with a
softmax cross-entropy loss averaged over the batch, with its backward pass
written out by hand; the step, the optimizer (Keras' SGD with momentum and
decoupled weight decay) and the coupled L2 decay are written from the spec,
not from the package.
"""

import numpy as np

DELTA = 1e-12
BN_EPSILON = 1e-3  # Keras' BatchNormalization defaults.
BN_MOMENTUM = 0.99


def softmax_cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient with respect to logits."""
    n = logits.shape[0]
    shifted = logits - logits.max(1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    d_logits = p.copy()
    d_logits[np.arange(n), y] -= 1.0
    return loss, d_logits / n


def forward_backward(params, x, y):
    """Loss, gradients and batch statistics of the network at `params`.

    `params` is `[W1, b1, gamma, beta, W2, b2]`.
    """
    W1, b1, gamma, beta, W2, b2 = params
    n = x.shape[0]
    z = x @ W1 + b1
    mean = z.mean(0)
    var = z.var(0)  # biased, as Keras' BatchNormalization.
    inv_std = 1.0 / np.sqrt(var + BN_EPSILON)
    z_hat = (z - mean) * inv_std
    a = gamma * z_hat + beta
    r = np.maximum(a, 0.0)
    loss, d_logits = softmax_cross_entropy(r @ W2 + b2, y)
    dW2 = r.T @ d_logits
    db2 = d_logits.sum(0)
    da = (d_logits @ W2.T) * (a > 0)
    dgamma = (da * z_hat).sum(0)
    dbeta = da.sum(0)
    dz_hat = da * gamma
    dz = (inv_std / n) * (
        n * dz_hat - dz_hat.sum(0) - z_hat * (dz_hat * z_hat).sum(0)
    )
    dW1 = x.T @ dz
    db1 = dz.sum(0)
    return loss, [dW1, db1, dgamma, dbeta, dW2, db2], (mean, var)


def norm(tensors):
    return np.sqrt(sum(np.sum(t**2) for t in tensors))


def perturbation(method, grads, params, radius, eta=0.01):
    if method == "sam":
        n = norm(grads)
        return [radius * g / (n + DELTA) for g in grads]
    if method == "asam":
        T = [np.abs(w) + eta for w in params]
        n = norm([t * g for t, g in zip(T, grads)])
        return [radius * t * t * g / (n + DELTA) for t, g in zip(T, grads)]
    if method == "pugd":
        a = [np.abs(w) * g for w, g in zip(params, grads)]
        n = norm(a)
        return [radius * t / (n + DELTA) for t in a]
    raise ValueError(method)


DEFAULT_GRAD_SCALE = {"sam": 0.0, "asam": 0.0, "pugd": 1.0, "msam": 0.0}
DEFAULT_RADIUS = {"sam": 0.05, "asam": 0.5, "pugd": 1.0,  # docs/method.md
                  "msam": 0.3}
SAM_FAMILY = ("gsam", "wsam", "fsam", "looksam")
for _name in SAM_FAMILY:
    DEFAULT_RADIUS[_name] = 0.05
    DEFAULT_GRAD_SCALE[_name] = 0.0
# The SAM variants' own settings as published (GSAM α, WSAM γ, Friendly-SAM
# σ and decay, LookSAM α and k).
DEFAULT_OPTIONS = {"gsam": dict(alpha=0.4),
                   "wsam": dict(gamma=0.9, decouple=True),
                   "fsam": dict(sigma=1.0, decay=0.9),
                   "looksam": dict(alpha=0.7, every=5)}


def flat(tensors):
    """One long vector of a list of arrays."""
    return np.concatenate([np.ravel(t) for t in tensors])


def unflat(vector, like):
    out, start = [], 0
    for t in like:
        out.append(vector[start:start + t.size].reshape(t.shape))
        start += t.size
    return out


class ReferenceTrainer:
    """Trains the reference network with a method and Keras' SGD."""

    def __init__(self, params, moving, method, radius=None, grad_scale=None,
                 perturb=True, lr=0.1, momentum=0.9, weight_decay=0.0,
                 coupled_weight_decay=0.0, sub_batch_size=None,
                 perturbed=None, **options):
        self.sub_batch_size = sub_batch_size
        self.options = dict(DEFAULT_OPTIONS.get(method, {}), **options)
        # Which parameters ε perturbs (all by default).
        self.perturbed = perturbed or [True] * len(params)
        self.average = None  # Friendly-SAM's m, before its first step
        self.orthogonal = None  # LookSAM's g_v
        self.position = 0  # LookSAM's steps in the method's phase
        self.params = [np.asarray(p, np.float64) for p in params]
        self.moving_mean, self.moving_var = [
            np.asarray(m, np.float64) for m in moving
        ]
        self.velocity = [np.zeros_like(p) for p in self.params]
        self.method = method
        self.radius = DEFAULT_RADIUS.get(method, 0.0) if radius is None \
            else radius
        self.grad_scale = (DEFAULT_GRAD_SCALE.get(method, 0.0)
                           if grad_scale is None else grad_scale)
        self.perturb = perturb
        self.lr, self.momentum = lr, momentum
        self.weight_decay = weight_decay
        self.coupled_weight_decay = coupled_weight_decay
        self.grad_evals = 0

    def _update_moving(self, mean, var):
        self.moving_mean = (self.moving_mean * BN_MOMENTUM
                            + mean * (1 - BN_MOMENTUM))
        self.moving_var = (self.moving_var * BN_MOMENTUM
                           + var * (1 - BN_MOMENTUM))

    def sub_batch_direction(self, x, y):
        """m-sharpness: ε and `g* + λ·g` per sub-batch of `sub_batch_size`
        examples (each with its own batch statistics), averaged with
        weights proportional to the sub-batches' sizes."""
        n, m = len(x), self.sub_batch_size
        d = [np.zeros_like(p) for p in self.params]
        mean_sum = var_sum = 0.0
        for start in range(0, n, m):
            xs, ys = x[start:start + m], y[start:start + m]
            f = len(xs) / n
            _, g, (mean, var) = forward_backward(self.params, xs, ys)
            eps = perturbation(self.method, g, self.params, self.radius)
            _, g_star, _ = forward_backward(
                [w + e for w, e in zip(self.params, eps)], xs, ys)
            d = [t + f * (gs + self.grad_scale * gi)
                 for t, gs, gi in zip(d, g_star, g)]
            mean_sum, var_sum = mean_sum + f * mean, var_sum + f * var
        self.grad_evals += 2
        self._update_moving(mean_sum, var_sum)
        if self.method == "pugd":
            n = norm(d)
            d = [t / (n + DELTA) for t in d]
        return d

    def momentum_sam_direction(self, x, y):
        """Momentum-SAM: one pass at `w − ρ·v/(‖v‖ + δ)`, `v` the momentum
        in the gradient's direction (Keras' SGD keeps `−lr·v`), the norm
        over the `perturbed` parameters; its gradient is the direction."""
        v = flat([-m for m in self.velocity]) * flat(
            [np.full(p.shape, m) for p, m in zip(self.params, self.perturbed)])
        eps = unflat(-self.radius * v / (np.linalg.norm(v) + DELTA),
                     self.params)
        _, g, (mean, var) = forward_backward(
            [w + e for w, e in zip(self.params, eps)], x, y)
        self.grad_evals += 1
        self._update_moving(mean, var)
        return g

    def direction(self, x, y):
        if self.method == "msam" and self.perturb:
            return self.momentum_sam_direction(x, y)
        if (self.sub_batch_size and self.perturb
                and self.method in ("sam", "asam", "pugd")):
            return self.sub_batch_direction(x, y)
        _, g, (mean, var) = forward_backward(self.params, x, y)
        self.grad_evals += 1
        self.moving_mean = (self.moving_mean * BN_MOMENTUM
                            + mean * (1 - BN_MOMENTUM))
        self.moving_var = (self.moving_var * BN_MOMENTUM
                           + var * (1 - BN_MOMENTUM))
        if self.method == "sgd" or not self.perturb:
            return g
        if self.method in SAM_FAMILY:
            return self.sam_family_direction(x, y, g)
        if self.method == "ugd":
            d = g
        else:
            eps = perturbation(self.method, g, self.params, self.radius)
            perturbed = [w + e for w, e in zip(self.params, eps)]
            _, g_star, _ = forward_backward(perturbed, x, y)
            self.grad_evals += 1
            d = [gs + self.grad_scale * gi for gs, gi in zip(g_star, g)]
        if self.method in ("ugd", "pugd"):
            n = norm(d)
            d = [t / (n + DELTA) for t in d]
        return d

    def sam_family_direction(self, x, y, g):
        """GSAM, WSAM, Friendly-SAM and LookSAM, from their papers, on
        flat vectors (ε on the `perturbed` parameters only)."""
        o, lam = self.options, self.grad_scale
        gv = flat(g)
        mask = flat([np.full(p.shape, m) for p, m in
                     zip(self.params, self.perturbed)])
        if self.method == "looksam":
            position, self.position = self.position, self.position + 1
            if position % o["every"] != 0:  # one pass, the stored g_v
                v = self.orthogonal
                g_star = gv + o["alpha"] * np.linalg.norm(gv) / (
                    np.linalg.norm(v) + DELTA) * v
                return unflat(g_star + lam * gv, g)
        u = gv
        if self.method == "fsam":
            if self.average is None:
                self.average = gv.copy()
            else:
                u = gv - o["sigma"] * self.average
                self.average = (o["decay"] * self.average
                                + (1 - o["decay"]) * gv)
        u = u * mask
        eps = self.radius * u / (np.linalg.norm(u) + DELTA)
        _, g_star, _ = forward_backward(
            [w + e for w, e in zip(self.params, unflat(eps, g))], x, y)
        self.grad_evals += 1
        s = flat(g_star)
        if self.method == "gsam":
            g_perp = gv - (gv @ s) / (s @ s + DELTA) * s
            d = s + lam * gv - o["alpha"] * g_perp
        elif self.method == "wsam" and o["decouple"]:
            # The optimizer steps on g; then w ← w − lr·γ/(1−γ)·(g* − g).
            self.apart = unflat(o["gamma"] / (1 - o["gamma"]) * (s - gv), g)
            d = gv
        elif self.method == "wsam":
            gamma = o["gamma"]
            # ∇[f(w) + γ/(1−γ)·(f(w+ε) − f(w))]
            d = gamma / (1 - gamma) * s + (1 - 2 * gamma) / (1 - gamma) * gv
        else:
            d = s + lam * gv
            if self.method == "looksam":
                self.orthogonal = s - (gv @ s) / (gv @ gv + DELTA) * gv
        return unflat(d, g)

    def step(self, x, y):
        self.apart = None
        d = self.direction(np.asarray(x, np.float64), np.asarray(y))
        d = [t + self.coupled_weight_decay * w for t, w in zip(d, self.params)]
        for i, (w, t) in enumerate(zip(self.params, d)):
            w = w - w * self.weight_decay * self.lr  # Keras: decoupled.
            self.velocity[i] = self.momentum * self.velocity[i] - self.lr * t
            self.params[i] = w + self.velocity[i]
            if self.apart is not None:  # after the optimizer's update
                self.params[i] = self.params[i] - self.lr * self.apart[i]


def mlp_forward_backward(params, x, y):
    """Loss and gradients of `Dense(h) → ReLU → Dense(c)`, softmax CE.

    `params` is `[W1, b1, W2, b2]`.
    """
    W1, b1, W2, b2 = params
    z = x @ W1 + b1
    r = np.maximum(z, 0.0)
    loss, d_logits = softmax_cross_entropy(r @ W2 + b2, y)
    dr = (d_logits @ W2.T) * (z > 0)
    return loss, [x.T @ dr, dr.sum(0), r.T @ d_logits, d_logits.sum(0)]


def replica_step(params, velocity, x, y, method, replicas, radius=1.0,
                 grad_scale=None, lr=0.1, momentum=0.9):
    """One step of a method whose ε is formed per replica (m-sharpness).

    The batch is split into `replicas` equal parts; each forms its own ε
    and its own `g* + λ·g`; the direction is their mean, normalised (for
    `ugd`/`pugd`) by its global norm. Returns the new params and velocity.
    """
    lam = DEFAULT_GRAD_SCALE.get(method, 0.0) if grad_scale is None \
        else grad_scale
    parts = []
    for xs, ys in zip(np.array_split(x, replicas), np.array_split(y, replicas)):
        _, g, = mlp_forward_backward(params, xs, ys)[:2]
        if method in ("sgd", "ugd"):
            parts.append(g)
            continue
        eps = perturbation(method, g, params, radius)
        _, g_star = mlp_forward_backward(
            [w + e for w, e in zip(params, eps)], xs, ys)
        parts.append([gs + lam * gi for gs, gi in zip(g_star, g)])
    d = [sum(ts) / replicas for ts in zip(*parts)]
    if method in ("ugd", "pugd"):
        n = norm(d)
        d = [t / (n + DELTA) for t in d]
    velocity = [momentum * v - lr * t for v, t in zip(velocity, d)]
    return [w + v for w, v in zip(params, velocity)], velocity


def authors_msam_sgd(params, moving, batches, lr, momentum, rho):
    """Momentum-SAM with SGD as its authors wrote it (Becker et al. 2024,
    Algorithm 1; MarlonBecker/MSAM `optimizer/msam.py`), no weight decay.

    The stored parameters are `w̃ = w − ρ·v/‖v‖`: the gradient is taken
    there, then `w` is recovered, `v ← μ·v + g`, `w ← w − lr·v`, and the
    parameters step to the new `w̃`. Returns `w` (the authors'
    `move_back_from_momentumAscent`) and the moving statistics.
    """
    p = [np.asarray(w, np.float64) for w in params]
    moving_mean, moving_var = [np.asarray(m, np.float64) for m in moving]
    buf = [np.zeros_like(w) for w in p]
    inverse_norm = 0.0
    for x, y in batches:
        _, g, (mean, var) = forward_backward(p, np.asarray(x, np.float64), y)
        moving_mean = moving_mean * BN_MOMENTUM + mean * (1 - BN_MOMENTUM)
        moving_var = moving_var * BN_MOMENTUM + var * (1 - BN_MOMENTUM)
        p = [w + rho * inverse_norm * b for w, b in zip(p, buf)]
        buf = [momentum * b + d for b, d in zip(buf, g)]
        p = [w - lr * b for w, b in zip(p, buf)]
        inverse_norm = 1.0 / (norm(buf) + DELTA)
        p = [w - rho * inverse_norm * b for w, b in zip(p, buf)]
    w = [w + rho * inverse_norm * b for w, b in zip(p, buf)]
    return w, (moving_mean, moving_var)


def authors_msam_adamw(params, batches, lr, beta1, beta2, eps, rho):
    """Momentum-SAM with AdamW as its authors wrote it
    (`optimizer/adamW_msam.py`), no weight decay: Adam's first moment `m`
    is `v`, the stored parameters `w − ρ·m/‖m‖`. Returns `w`. `eps` is
    added where Keras' Adam adds it, to `√s` before the bias correction
    (PyTorch's, which the authors use, adds it after): the one liberty."""
    p = [np.asarray(w, np.float64) for w in params]
    m = [np.zeros_like(w) for w in p]
    s = [np.zeros_like(w) for w in p]
    factor = 0.0
    for step, (x, y) in enumerate(batches, start=1):
        _, g, _ = forward_backward(p, np.asarray(x, np.float64), y)
        p = [w + factor * a for w, a in zip(p, m)]
        m = [beta1 * a + (1 - beta1) * d for a, d in zip(m, g)]
        s = [beta2 * b + (1 - beta2) * d * d for b, d in zip(s, g)]
        correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        p = [w - lr / correction1 * a / ((np.sqrt(b) + eps)
                                         / np.sqrt(correction2))
             for w, a, b in zip(p, m, s)]
        factor = rho / (norm(m) + DELTA)
        p = [w - factor * a for w, a in zip(p, m)]
    return [w + factor * a for w, a in zip(p, m)]
