"""A1111 sampler and schedule names -> diffusers schedulers.

A1111 1.9+ names a sampler and a schedule apart (``sampler_name: "DPM++ 2M"``,
``scheduler: "Karras"``); older clients send one name (``"DPM++ 2M Karras"``), which is
split at a known schedule suffix, as A1111's ``get_sampler_and_scheduler`` does. The
schedule ``Automatic`` means the sampler's own default (Karras for DPM++ 2M, exponential
for the 2M SDE family), again as in A1111.

The mapping follows the table in the diffusers scheduler docs ("A1111/k-diffusion" ->
diffusers): Karras, exponential and beta schedules are the ``use_karras_sigmas`` /
``use_exponential_sigmas`` / ``use_beta_sigmas`` flags, SDE variants the
``algorithm_type="sde-dpmsolver++"`` of the multistep solver; ``SGM Uniform`` is
``timestep_spacing="trailing"``. Samplers diffusers has no counterpart for (DPM fast,
DPM adaptive, Restart, ...) are refused with the list of those that work, never silently
swapped. Flux and SD3 (flow matching) run their own Euler scheduler only.

Pure: the scheduler is built by :func:`build` from a class name and flags, the diffusers
import happens there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidGenerateRequest


@dataclass(frozen=True)
class Sampler:
    name: str
    cls: str
    config: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "Uniform"
    aliases: tuple[str, ...] = ()
    sigmas: bool = True  # accepts use_*_sigmas (a sigma-based k-diffusion scheduler)


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {}, "Karras", ("k_dpmpp_2m",)),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", {}, "Karras", ("k_dpmpp_sde",)),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++"}, "Exponential", ("k_dpmpp_2m_sde",)),
    Sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}, "Exponential",
            ("k_dpmpp_2m_sde_heun",)),
    Sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler", {}, "Karras", ("k_dpmpp_2s_a",)),
    Sampler("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "Exponential",
            ("k_dpmpp_3m_sde",)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", {}, "Uniform",
            ("k_euler_a", "k_euler_ancestral"), sigmas=False),
    Sampler("Euler", "EulerDiscreteScheduler", {}, "Uniform", ("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", {}, "Uniform", ("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", {}, "Uniform", ("k_heun",)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", {}, "Karras", ("k_dpm_2",)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, "Karras", ("k_dpm_2_a",)),
    Sampler("DEIS", "DEISMultistepScheduler", {}, "Uniform", ("deis",)),
    Sampler("DDIM", "DDIMScheduler", {}, "Uniform", ("ddim",), sigmas=False),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, "Uniform", ("plms",),
            sigmas=False),
    Sampler("UniPC", "UniPCMultistepScheduler", {}, "Uniform", ("unipc",)),
    Sampler("LCM", "LCMScheduler", {}, "Uniform", ("lcm",), sigmas=False),
    Sampler("DDPM", "DDPMScheduler", {}, "Uniform", ("ddpm",), sigmas=False),
)}

FLOW_SAMPLERS: dict[str, Sampler] = {
    "Euler": Sampler("Euler", "FlowMatchEulerDiscreteScheduler", {}, "Simple", ("k_euler",),
                     sigmas=False),
}

# schedule label -> (A1111 short name, aliases, scheduler config it sets)
SCHEDULES: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "Automatic": ("automatic", (), {}),
    "Uniform": ("uniform", (), {}),
    "Karras": ("karras", (), {"use_karras_sigmas": True}),
    "Exponential": ("exponential", (), {"use_exponential_sigmas": True}),
    "Beta": ("beta", (), {"use_beta_sigmas": True}),
    "SGM Uniform": ("sgm_uniform", ("SGMUniform",), {"timestep_spacing": "trailing"}),
    "Simple": ("simple", (), {}),
}
UNSUPPORTED = ("DPM fast", "DPM adaptive", "Restart", "HeunPP2", "IPNDM", "IPNDM_V",
               "DDIM CFG++")


@dataclass(frozen=True)
class Choice:
    """A resolved sampler: names for infotext, and what to build."""

    sampler: Sampler
    schedule: str  # the effective schedule label ("Karras"), never "Automatic"
    asked_schedule: str  # as the request named it, for the A1111 response

    @property
    def name(self) -> str:
        return self.sampler.name

    @property
    def label(self) -> str:
        """The schedule as the WebUI writes it in infotext: ``Automatic`` when it is the
        sampler's own default (``DPM++ 2M Karras`` -> ``DPM++ 2M`` + ``Automatic``)."""
        return "Automatic" if self.schedule == self.sampler.default_schedule else self.schedule

    @property
    def config(self) -> dict[str, Any]:
        return {**self.sampler.config, **SCHEDULES[self.schedule][2]}


def _schedule_names() -> dict[str, str]:
    out: dict[str, str] = {}
    for label, (short, aliases, _) in SCHEDULES.items():
        for n in (label, short, *aliases):
            out[n.lower()] = label
    return out


def _sampler_names(table: dict[str, Sampler]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in table.values():
        for n in (s.name, *s.aliases):
            out[n.lower()] = s.name
    return out


def resolve(sampler_name: str | None, scheduler: str | None = None, *, default: str = "Euler a",
            flow: bool = False, field: str = "sampler_name") -> Choice:
    """``("DPM++ 2M Karras", None)`` and ``("DPM++ 2M", "Karras")`` give the same choice."""
    table = FLOW_SAMPLERS if flow else SAMPLERS
    schedules = _schedule_names()
    name = (sampler_name or "").strip() or (default if not flow else "Euler")
    asked = (scheduler or "").strip() or "Automatic"
    if asked.lower() not in schedules:
        raise InvalidGenerateRequest(
            f"unknown schedule {asked!r}; use one of {', '.join(SCHEDULES)}", field="scheduler")
    label = schedules[asked.lower()]
    samplers = _sampler_names(table)
    if name.lower() not in samplers:  # "DPM++ 2M Karras": split a schedule suffix off
        for alias, sched in sorted(schedules.items(), key=lambda kv: -len(kv[0])):
            if name.lower().endswith(" " + alias):
                base = name[: -len(alias) - 1]
                if base.lower() in samplers:
                    name, label = base, sched
                    break
    if name.lower() not in samplers:
        known = ", ".join(table)
        why = " (diffusers has no counterpart)" if name in UNSUPPORTED else ""
        if flow:
            why = " (Flux and SD3 run the flow-matching Euler sampler)"
        raise InvalidGenerateRequest(f"unknown sampler {name!r}{why}; use one of {known}",
                                     field=field)
    sampler = table[samplers[name.lower()]]
    effective = sampler.default_schedule if label == "Automatic" else label
    if SCHEDULES[effective][2] and not sampler.sigmas and effective != "SGM Uniform":
        raise InvalidGenerateRequest(
            f"{sampler.name} has no {effective} schedule in diffusers; use Automatic or "
            "Uniform, or a sigma-based sampler (Euler, DPM++ 2M, ...)", field="scheduler")
    return Choice(sampler, effective, asked)


def build(choice: Choice, base_config: dict[str, Any], *, seed: int | None = None) -> Any:
    """A fresh scheduler of the chosen kind from the model's own scheduler config (its
    betas and prediction type), so switching samplers never changes the model's maths."""
    import diffusers

    cls = getattr(diffusers, choice.sampler.cls)
    extra = dict(choice.config)
    if choice.sampler.cls == "DPMSolverSDEScheduler" and seed is not None:
        extra["noise_sampler_seed"] = seed  # its Brownian noise has its own generator
    clean = {k: v for k, v in base_config.items() if not k.startswith("_")
             and k not in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")}
    return cls.from_config({**clean, **extra})


def listing() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/samplers``: A1111's ``[{name, aliases, options}]``."""
    out = []
    for s in SAMPLERS.values():
        options: dict[str, Any] = {}
        if s.default_schedule != "Uniform":
            options["scheduler"] = SCHEDULES[s.default_schedule][0]
        out.append({"name": s.name, "aliases": list(s.aliases), "options": options})
    return out


def schedule_listing() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/schedulers``."""
    return [{"name": short, "label": label, "aliases": list(aliases) or None,
             "default_rho": 7.0 if label == "Karras" else None, "need_inner_model": False}
            for label, (short, aliases, _) in SCHEDULES.items()]
