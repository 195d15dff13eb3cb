"""Site configuration: one YAML file → pydantic models.

- :mod:`edge.config.yamlsrc` reads YAML keeping the line of every key and item, resolves
  ``${ENV}`` / ``${ENV:-default}`` references and ``!secret name`` (from ``secrets.yaml`` beside
  the site file), and refuses duplicate keys.
- :mod:`edge.config.problems` turns pydantic errors into one line per problem:
  ``site.yaml:42: sources[1].devices[0].points[3].dtype: expected one of ... (got "flaot32");
  did you mean "float32"?``
- :mod:`edge.config.base` holds the shared model pieces; :mod:`edge.config.site` the site model
  and :func:`edge.config.site.load_site`.
"""
