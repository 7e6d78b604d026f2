"""Publishing: disclosure-controlled regional tables, boundaries with counts, maps and a self-contained report.

>>> from publish import publish_run
>>> publish_run(load_config("config/pointcount.yaml"))   # -> exports/<snapshot_date>_<run_id>/
"""

from publish.disclosure import DisclosureRule
from publish.publisher import publish_run, read_published
from publish.source import PublishError

__all__ = ["DisclosureRule", "PublishError", "publish_run", "read_published"]
