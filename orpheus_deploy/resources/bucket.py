"""The two buckets: in the deployment's region, uniform bucket-level access, public access
prevention enforced (the model, the deployment state and the build sources are private).
``Bucket`` holds what they share (read, create or update, delete); each names its bucket.

- ``ModelBucket``: the model and ``_orpheus/state.json``; kept by destroy unless asked.
- ``BuildBucket``: build sources and logs. Worthless after a few days, so a lifecycle rule
  deletes objects older than ``BUILD_OBJECTS_MAX_AGE_DAYS`` (storage would otherwise grow with
  every build).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_CONFLICT, CloudError
from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.resources.base import Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud


BUILD_OBJECTS_MAX_AGE_DAYS = 7


@dataclass(frozen=True)
class BucketSpec:
    location: str  # upper case, as GCS reports it: "US-CENTRAL1"
    uniform_access: bool
    public_access_prevention: str
    delete_after_days: int | None = None  # lifecycle: delete objects older than this


class Bucket(Resource):
    """A private bucket of the deployment in its region (subclasses name it and may add a
    lifecycle rule). Siblings, not parent and child: destroy keeps a ``ModelBucket`` unless
    asked, which must never match the build bucket."""

    kind = "bucket"

    def desired(self, settings: Settings) -> BucketSpec:
        return BucketSpec(location=settings.region.upper(), uniform_access=True,
                          public_access_prevention="enforced")

    def read(self, cloud: Cloud) -> BucketSpec | None:
        with translated(f"read bucket {self.name}", cloud.project):
            bucket = cloud.storage().lookup_bucket(self.name,
                                                   retry=cloud.policy.storage_retry())
        if bucket is None:
            return None
        return _spec_of(bucket)

    def apply(self, cloud: Cloud, spec: BucketSpec) -> None:
        from google.api_core import exceptions

        client = cloud.storage()
        with translated(f"create bucket {self.name}", cloud.project):
            existing = client.lookup_bucket(self.name, retry=cloud.policy.storage_retry())
            if existing is None:
                bucket = client.bucket(self.name)
                _configure(bucket, spec)
                try:
                    client.create_bucket(bucket, project=cloud.project,
                                         location=spec.location.lower())
                except exceptions.Conflict:
                    # Bucket names are global: someone else may own this one.
                    if client.lookup_bucket(self.name) is None:
                        raise CloudError(
                            f"Bucket name {self.name} is taken by another project",
                            "set a different `name` in orpheus.toml", EXIT_CONFLICT,
                            kind="conflict") from None
                return
            if existing.location and existing.location.upper() != spec.location:
                raise CloudError(
                    f"Bucket {self.name} exists in {existing.location}, not {spec.location}",
                    "a bucket cannot move; delete it or use the bucket's region",
                    EXIT_CONFLICT, kind="conflict")
            _configure(existing, spec)
            existing.patch(retry=cloud.policy.storage_retry())

    def delete(self, cloud: Cloud) -> bool:
        """Delete every object, then the bucket. Not ``bucket.delete(force=True)``: the client
        refuses that for a bucket of more than 256 objects (build sources and logs pile up)."""
        from google.api_core import exceptions

        client = cloud.storage()
        with translated(f"delete bucket {self.name}", cloud.project):
            bucket = client.lookup_bucket(self.name, retry=cloud.policy.storage_retry())
            if bucket is None:
                return False
            try:
                for blob in client.list_blobs(self.name, retry=cloud.policy.storage_retry()):
                    with contextlib.suppress(exceptions.NotFound):  # deleted meanwhile
                        blob.delete()
                bucket.delete()
            except exceptions.NotFound:
                return False
            return True


class ModelBucket(Bucket):
    @property
    def name(self) -> str:
        return self.settings.names.bucket


class BuildBucket(Bucket):
    @property
    def name(self) -> str:
        return self.settings.names.build_bucket

    def desired(self, settings: Settings) -> BucketSpec:
        return dataclasses.replace(super().desired(settings),
                                   delete_after_days=BUILD_OBJECTS_MAX_AGE_DAYS)


def _configure(bucket: Any, spec: BucketSpec) -> None:
    bucket.iam_configuration.uniform_bucket_level_access_enabled = spec.uniform_access
    bucket.iam_configuration.public_access_prevention = spec.public_access_prevention
    if spec.delete_after_days is not None:
        bucket.clear_lifecycle_rules()
        bucket.add_lifecycle_delete_rule(age=spec.delete_after_days)


def _spec_of(bucket: Any) -> BucketSpec:
    config = bucket.iam_configuration
    ages = [rule.get("condition", {}).get("age") for rule in bucket.lifecycle_rules
            if rule.get("action", {}).get("type") == "Delete"]
    return BucketSpec(
        location=(bucket.location or "").upper(),
        uniform_access=bool(config.uniform_bucket_level_access_enabled),
        public_access_prevention=config.public_access_prevention or "inherited",
        delete_after_days=min((a for a in ages if a), default=None),
    )
