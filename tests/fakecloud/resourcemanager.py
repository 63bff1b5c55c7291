"""Fake Resource Manager v3: the project and its IAM policy (for project-level bindings)."""

from __future__ import annotations

import re
from typing import Any

from google.cloud import resourcemanager_v3

from tests.fakecloud.core import FakeService, invalid, rpc

_PERMISSION_RE = re.compile(r"^[a-z][a-z0-9]*\.[a-zA-Z][a-zA-Z0-9]*\.[a-zA-Z][a-zA-Z0-9]*$")


class ProjectsFake(FakeService):
    client = ("google.cloud.resourcemanager_v3", "ProjectsClient")
    key = "projects"
    api = "cloudresourcemanager.googleapis.com"

    @rpc("resourcemanager.projects.get")
    def get_project(self, request: Any, context: Any) -> Any:
        self.check_project(request.name)
        return resourcemanager_v3.Project(
            name=f"projects/{self.cloud.project_number}", project_id=self.cloud.project,
            state=resourcemanager_v3.Project.State.ACTIVE)

    @rpc("resourcemanager.projects.getIamPolicy")
    def get_iam_policy(self, request: Any, context: Any) -> Any:
        self.check_project(request.resource)
        return self.cloud.iam.get(f"projects/{self.cloud.project}")

    @rpc()
    def test_iam_permissions(self, request: Any, context: Any) -> Any:
        """The caller holds every permission but those denied with ``cloud.deny``."""
        from google.iam.v1 import iam_policy_pb2

        self.check_project(request.resource)
        if len(request.permissions) > 100:
            raise invalid("At most 100 permissions can be tested at once.")
        for permission in request.permissions:
            # "Permissions with wildcards (such as * or storage.*) are not allowed"
            # (projects.testIamPermissions, cloud.google.com/resource-manager/reference/rest/v1/
            # projects/testIamPermissions); a name not of the form service.resource.verb is
            # refused too, so a typo in doctor's list fails here rather than passing.
            if not _PERMISSION_RE.match(permission):
                raise invalid(f"Permission {permission} is not valid.")
        return iam_policy_pb2.TestIamPermissionsResponse(
            permissions=[p for p in request.permissions if p not in self.cloud.denied])

    @rpc("resourcemanager.projects.setIamPolicy")
    def set_iam_policy(self, request: Any, context: Any) -> Any:
        self.check_project(request.resource)
        return self.cloud.iam.set(f"projects/{self.cloud.project}", request.policy,
                                  self.cloud.validate_member)


SERVICES = [ProjectsFake]
