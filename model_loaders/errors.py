"""Errors a model backend raises for causes outside CineReel's code, each with a message that says what to do."""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """A model or service could not do its work: a server that is down, failing or answering unusable output,
    a language model that could not write a valid plan, a missing speech front end. Not a bug: the headless
    command reports it in one line; the critic gate counts it as a critique that could not be made."""
