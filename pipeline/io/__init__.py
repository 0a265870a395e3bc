"""Storage and tables: manifests in (``manifest``, ``manifest_lines``), fsspec storage with its retry
defaults (``storage``, ``s3``), the result schema (``schema``) and the commit stage that writes
results/ and failed/ atomically (``commit``).

The ground floor: imports nothing from ``pipeline`` but ``config``, ``languages`` and ``redact``.
Anyone may import it; ``actors/`` uses ``schema`` and ``storage`` (model copies from s3://).
"""
