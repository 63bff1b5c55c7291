"""Phases: ordered groups of resources (``orpheus_deploy.resources``) and actions.

``setup`` (APIs, bucket, registry, secret, service accounts + bindings) and ``upload_model``
live here; the deploy issue adds build, deploy-backend, deploy-frontend and smoke-test.
``phases.setup.setup_resources(settings)`` returns setup's resources in creation order, so
``plan``/``status``/``destroy`` can reuse them.
"""
