"""App ``hygiene``: people in a food factory's clean zones without mask or hair cover.

:mod:`.config`, :mod:`.app`; the vision pipeline (:mod:`.people`, :mod:`.crops`,
:mod:`.pipeline`), the per-person verdicts (:mod:`.state`) and the evidence crops
(:mod:`.evidence`)."""
