"""Sources: each owns its transport (one task per bus or peer), decodes with :mod:`protocols`
and emits :class:`edge.readings.ReadingBatch` values into the site's readings channel."""
