"""Fake IAM admin v1 (google-cloud-iam's iam_admin_v1): service accounts."""

from __future__ import annotations

import re
from typing import Any

from google.cloud import iam_admin_v1
from google.protobuf import empty_pb2

from tests.fakecloud.core import (
    FakeService,
    already_exists,
    invalid,
    not_found,
    rpc,
    update_fields,
)

# IAM's own rule: 6-30 characters, lowercase letters, digits, hyphens, starting with a letter.
_ACCOUNT_ID_RE = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
_SA_RE = re.compile(r"^projects/([^/]+)/serviceAccounts/([^/]+)$")


class IamAdminFake(FakeService):
    client = ("google.cloud.iam_admin_v1", "IAMClient")
    key = "iam"
    api = "iam.googleapis.com"

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self.accounts: dict[str, iam_admin_v1.ServiceAccount] = {}  # by email

    def exists(self, email: str) -> bool:
        with self.lock:
            return email in self.accounts

    def _get(self, name: str) -> iam_admin_v1.ServiceAccount:
        match = _SA_RE.match(name)
        if not match:
            raise invalid(f"Invalid service account name {name!r}.")
        self.check_project(name)
        key = match.group(2)
        for account in self.accounts.values():
            if key in (account.email, account.unique_id):
                return account
        raise not_found(f"Service account {name}")

    @rpc("iam.serviceAccounts.create")
    def create_service_account(self, request: Any, context: Any) -> Any:
        self.check_project(request.name)
        if not _ACCOUNT_ID_RE.match(request.account_id):
            raise invalid(f"Invalid account_id {request.account_id!r}: 6-30 characters, "
                          "lowercase letters, digits and hyphens, starting with a letter.")
        email = f"{request.account_id}@{self.cloud.project}.iam.gserviceaccount.com"
        with self.lock:
            if email in self.accounts:
                raise already_exists(f"Service account {request.account_id}")
            account = iam_admin_v1.ServiceAccount(request.service_account)
            account.name = f"projects/{self.cloud.project}/serviceAccounts/{email}"
            account.email = email
            account.project_id = self.cloud.project
            account.unique_id = str(100000000000000000000 + self.cloud.next_id())
            account.etag = b"BwX1"
            self.accounts[email] = account
            return account

    @rpc("iam.serviceAccounts.get")
    def get_service_account(self, request: Any, context: Any) -> Any:
        with self.lock:
            return self._get(request.name)

    @rpc("iam.serviceAccounts.list")
    def list_service_accounts(self, request: Any, context: Any) -> Any:
        self.check_project(request.name)
        with self.lock:
            return iam_admin_v1.ListServiceAccountsResponse(
                accounts=list(self.accounts.values()))

    @rpc("iam.serviceAccounts.update")
    def patch_service_account(self, request: Any, context: Any) -> Any:
        with self.lock:
            return update_fields(self._get(request.service_account.name),
                                 request.service_account, request.update_mask.paths,
                                 {"display_name", "description"})

    @rpc("iam.serviceAccounts.delete")
    def delete_service_account(self, request: Any, context: Any) -> Any:
        with self.lock:
            account = self._get(request.name)
            del self.accounts[account.email]
            self.cloud.iam.forget(account.name)
            return empty_pb2.Empty()

    @rpc("iam.serviceAccounts.getIamPolicy")
    def get_iam_policy(self, request: Any, context: Any) -> Any:
        with self.lock:
            account = self._get(request.resource)
        return self.cloud.iam.get(account.name)

    @rpc("iam.serviceAccounts.setIamPolicy")
    def set_iam_policy(self, request: Any, context: Any) -> Any:
        with self.lock:
            account = self._get(request.resource)
        return self.cloud.iam.set(account.name, request.policy, self.cloud.validate_member)


SERVICES = [IamAdminFake]
