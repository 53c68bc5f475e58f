"""Imports every service's models, so Base.metadata knows all tables (for Alembic)."""

from strato import events  # noqa: F401
from strato.backup import models as backup_models  # noqa: F401
from strato.compute import migration_models as migration_models  # noqa: F401
from strato.compute import models as compute_models  # noqa: F401
from strato.compute import reads_models  # noqa: F401
from strato.compute import schedule_models as schedule_models  # noqa: F401
from strato.identity import models as identity_models  # noqa: F401
from strato.image import models as image_models  # noqa: F401
from strato.jobs import models as jobs_models  # noqa: F401
from strato.network import models as network_models  # noqa: F401
from strato.quota import models as quota_models  # noqa: F401
from strato.volume import messages as volume_messages  # noqa: F401
from strato.volume import models as volume_models  # noqa: F401
