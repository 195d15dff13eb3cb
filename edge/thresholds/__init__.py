"""App ``thresholds``: one alarm and one clear per excursion of a reading past its limit.

:mod:`.config` and :mod:`.app`."""
