"""A hardware budget: ratios of the teacher's cost that a student may not exceed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amc.errors import AmcError

RESOURCES = ("flops", "params", "size", "latency")


@dataclass(frozen=True)
class Budget:
    """Each field is a ratio of the teacher's cost (0.5 = half); None leaves that resource free."""

    flops: float | None = None
    params: float | None = None
    size: float | None = None
    latency: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.items():
            if not 0.0 < value <= 1.0:
                raise AmcError(f"budget {name}={value} must be a ratio in (0, 1] of the teacher's cost")
        if not self.items():
            raise AmcError("the budget names no resource; give at least one of flops, params, size, latency")

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in asdict(self).items() if v is not None]

    def met_by(self, ratios: dict[str, float], tolerance: float = 1e-6) -> bool:
        return all(ratios[name] <= value + tolerance for name, value in self.items())

    @classmethod
    def parse(cls, text: str) -> Budget:
        """From `flops=0.5,size=0.1` (or a bare number, meaning flops)."""
        try:
            if "=" not in text:
                return cls(flops=float(text))
            pairs = dict(part.split("=", 1) for part in text.split(",") if part.strip())
            unknown = set(pairs) - set(RESOURCES)
            if unknown:
                raise AmcError(f"unknown budget resource(s) {sorted(unknown)}; use {', '.join(RESOURCES)}")
            return cls(**{k.strip(): float(v) for k, v in pairs.items()})
        except ValueError as exc:
            raise AmcError(f"cannot read budget {text!r}: write it as flops=0.5,size=0.1") from exc
