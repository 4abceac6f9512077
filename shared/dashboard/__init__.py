"""The analytics function's logic: data loading/caching (``data``), queries (``queries``), chart specs
(``charts``), HTML pages (``pages``) and the request router (``app``). See docs/dashboard.md."""
