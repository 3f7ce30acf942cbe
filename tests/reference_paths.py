"""Reference copies of code paths that were made cheaper without changing their results (issue 15).

The tests compare the library's paths with these, bit for bit: ``reference_stage`` is the Sinkhorn stage loop and
``reference_text_call`` is ``TextEncoder.__call__`` as they were before their bookkeeping was reduced.
"""

from __future__ import annotations

import math

import torch

from visprompt.models.text import PromptEmbeddings, TextEncoder, encode_full, encode_prefix_shared, prefix_cache

_ABSORB = 1e50
_LOG_NEGLIGIBLE = -575.0


def _in_range(scaling: torch.Tensor) -> bool:
    return bool(((scaling > 1 / _ABSORB) & (scaling < _ABSORB)).all())


def reference_stage(mr, a, b, u, v, tol, max_iter):  # the earlier loop, verbatim
    log_a, log_b = a.log(), b.log()
    sweeps, err = 0, math.inf
    while sweeps < max_iter:
        v = log_b - torch.logsumexp(mr + u[:, None], dim=0)
        log_rows = torch.logsumexp(mr + v[None, :], dim=1)
        sweeps, err = sweeps + 1, float((torch.exp(log_rows + u) - a).abs().sum())
        if err <= tol:
            return u, v, sweeps, err
        u = log_a - log_rows
        log_kernel = mr + u[:, None] + v[None, :]
        kernel = torch.exp(log_kernel).masked_fill_(log_kernel < _LOG_NEGLIGIBLE, 0.0)
        alpha, beta = torch.ones_like(u), torch.ones_like(v)
        while sweeps < max_iter:
            new_beta = b / (kernel.T @ alpha)
            k_beta = kernel @ new_beta
            new_alpha = a / k_beta
            if not (_in_range(new_alpha) and _in_range(new_beta)):
                break
            sweeps, err, beta = sweeps + 1, float((alpha * k_beta - a).abs().sum()), new_beta
            if err <= tol:
                return u + alpha.log(), v + beta.log(), sweeps, err
            alpha = new_alpha
        u, v = u + alpha.log(), v + beta.log()
    return u, v, sweeps, err


def reference_text_call(enc: TextEncoder, prompts: PromptEmbeddings) -> torch.Tensor:
    groups = enc._groups(prompts.pool_index)
    cache = prefix_cache(enc.clip, prompts.prefix) if enc.path == "prefix" else None
    checkpoint = enc.class_chunk is not None and len(groups) > 1 and torch.is_grad_enabled()
    outs = []
    for group in groups:
        part = prompts.classes(group)
        if checkpoint:
            flat = [t for kv in cache for t in kv] if cache is not None else []
            outs.append(torch.utils.checkpoint.checkpoint(enc._encode_part, part.prefix, part.body, part.pool_index,
                                                          *flat, use_reentrant=False))  # fmt: skip
        elif enc.path == "prefix":
            outs.append(encode_prefix_shared(enc.clip, part, cache))
        else:
            length = int(part.pool_index.max()) + 1 if enc.path == "truncated" else None
            outs.append(encode_full(enc.clip, part, length))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    if isinstance(groups[0], torch.Tensor) and len(groups) > 1:
        out = out[:, torch.argsort(torch.cat(groups))]
    return out
