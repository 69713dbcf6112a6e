"""Kubernetes: the cluster's objects as plain dicts (`objects`) and the ``clipper k8s`` command (`cli`).

Both are pure and need neither the ``kubernetes`` client nor a cluster; `clipper.managers.kubernetes`
(`KubernetesContainerManager`) creates the same objects through the client. Light on purpose: ``clipper
--help`` imports `cli`.
"""
