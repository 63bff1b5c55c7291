"""Dedicated service accounts for the backend and the frontend (never the default compute
account), so each service gets only the permissions it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.resources.base import Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud


@dataclass(frozen=True)
class ServiceAccountSpec:
    display_name: str
    description: str


_ROLES = {
    "backend": ("backend", "Runs the GPU inference backend; reads the model bucket."),
    "frontend": ("frontend", "Runs the public API; reads the API-key secret, invokes the "
                             "backend."),
}


class ServiceAccount(Resource):
    kind = "serviceaccount"

    def __init__(self, settings: Settings, role: str):
        if role not in _ROLES:
            raise ValueError(f"unknown service account role {role!r}")
        super().__init__(settings)
        self.role = role

    @property
    def account_id(self) -> str:
        names = self.settings.names
        return names.backend_sa_id if self.role == "backend" else names.frontend_sa_id

    @property
    def email(self) -> str:
        names = self.settings.names
        return names.backend_sa_email if self.role == "backend" else names.frontend_sa_email

    @property
    def member(self) -> str:
        return f"serviceAccount:{self.email}"

    @property
    def name(self) -> str:
        return self.account_id

    def desired(self, settings: Settings) -> ServiceAccountSpec:
        label, description = _ROLES[self.role]
        return ServiceAccountSpec(f"{settings.name} {label}", description)

    def read(self, cloud: Cloud) -> ServiceAccountSpec | None:
        from google.api_core import exceptions

        with translated(f"read service account {self.account_id}", cloud.project):
            try:
                account = cloud.iam_admin().get_service_account(
                    name=self.settings.names.service_account_path(self.email),
                    retry=cloud.retry)
            except exceptions.NotFound:
                return None
        return ServiceAccountSpec(account.display_name, account.description)

    def apply(self, cloud: Cloud, spec: ServiceAccountSpec) -> None:
        from google.api_core import exceptions

        client = cloud.iam_admin()
        names = self.settings.names
        with translated(f"create service account {self.account_id}", cloud.project):
            try:
                client.create_service_account(
                    request={"name": names.project_path, "account_id": self.account_id,
                             "service_account": {"display_name": spec.display_name,
                                                 "description": spec.description}},
                    retry=cloud.retry)
                return
            except exceptions.AlreadyExists:
                pass
            client.patch_service_account(
                request={"service_account": {
                    "name": names.service_account_path(self.email),
                    "display_name": spec.display_name, "description": spec.description},
                    "update_mask": {"paths": ["display_name", "description"]}},
                retry=cloud.retry)

    def delete(self, cloud: Cloud) -> bool:
        from google.api_core import exceptions

        with translated(f"delete service account {self.account_id}", cloud.project):
            try:
                cloud.iam_admin().delete_service_account(
                    name=self.settings.names.service_account_path(self.email),
                    retry=cloud.retry)
            except exceptions.NotFound:
                return False
        return True
