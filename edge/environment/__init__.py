"""App ``environment``: water and air monitoring stations, judged against the national limits
shipped in ``limits/*.yaml``.

:mod:`.config`, :mod:`.app` and the domain rules in :mod:`.quality`."""
