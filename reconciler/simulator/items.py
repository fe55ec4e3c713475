"""Items as clients create them: a job's config.xml (both ways) and list views.

Jenkins reads a posted config.xml with XStream (Items.load / AbstractItem.updateByXml); the simulator
reads the parts its model has: the kind of job, its description, whether it is disabled or runs
concurrently, and the parameter definitions of its `hudson.model.ParametersDefinitionProperty`.
The XML is parsed without a DTD, so no entity, external or internal, is ever expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .model import JenkinsError, JobDef, ParamDef

try:  # a hardened parser where it is installed; the stdlib one otherwise, behind the DOCTYPE refusal below
    from defusedxml.ElementTree import fromstring as _fromstring
except ImportError:  # pragma: no cover - depends on the environment
    _fromstring = ElementTree.fromstring

ROOTS = {"project": "freestyle", "flow-definition": "pipeline"}
PARAM_TAGS = {
    "hudson.model.StringParameterDefinition": "string",
    "hudson.model.TextParameterDefinition": "string",
    "hudson.model.BooleanParameterDefinition": "boolean",
    "hudson.model.ChoiceParameterDefinition": "choice",
    "hudson.model.PasswordParameterDefinition": "password",
}
TAG_OF = {"string": "hudson.model.StringParameterDefinition", "boolean": "hudson.model.BooleanParameterDefinition",
          "choice": "hudson.model.ChoiceParameterDefinition", "password": "hudson.model.PasswordParameterDefinition"}


def parse_xml(text: bytes | str) -> ElementTree.Element:
    """Refuse a DOCTYPE outright (Jenkins' XStream never needs one), then parse."""
    raw = text.encode() if isinstance(text, str) else text
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise JenkinsError(500, "java.io.IOException: Unable to read: DOCTYPE is disallowed")
    try:
        return _fromstring(raw)
    except ElementTree.ParseError as e:
        # Items.load / XStream: a malformed body is an IOException, a 500 like any other
        raise JenkinsError(500, f"java.io.IOException: Unable to read: {e}") from None
    except Exception as e:  # defusedxml's refusals
        raise JenkinsError(500, f"java.io.IOException: Unable to read: {e}") from None


def _text(el: ElementTree.Element | None, default: str = "") -> str:
    return default if el is None or el.text is None else el.text


def job_from_xml(full_name: str, text: bytes | str, base: JobDef | None = None) -> JobDef:
    """A JobDef from a freestyle (`<project>`) or Pipeline (`<flow-definition>`) config.xml."""
    root = parse_xml(text)
    kind = ROOTS.get(root.tag)
    if kind is None:
        raise JenkinsError(500, f"com.thoughtworks.xstream.mapper.CannotResolveClassException: {root.tag}")
    params: list[ParamDef] = []
    for prop in root.iter("hudson.model.ParametersDefinitionProperty"):
        for definitions in prop.iter("parameterDefinitions"):
            for d in definitions:
                ptype = PARAM_TAGS.get(d.tag)
                if ptype is None:
                    continue  # a parameter type of a plugin the simulator does not model
                name = _text(d.find("name"))
                description = _text(d.find("description"))
                if ptype == "choice":
                    choices = tuple(_text(c) for c in d.iter("string"))
                    params.append(ParamDef(name=name, type="choice", choices=choices, description=description))
                elif ptype == "boolean":
                    params.append(ParamDef(name=name, type="boolean", description=description,
                                           default=_text(d.find("defaultValue")).strip() == "true"))
                else:
                    default = d.find("defaultValue")
                    params.append(ParamDef(name=name, type=ptype, description=description,
                                           default=None if default is None and ptype == "string"
                                           else _text(default)))
    has_params = any(True for _ in root.iter("hudson.model.ParametersDefinitionProperty"))
    concurrent = root.find("concurrentBuild")
    if kind == "pipeline":  # disableConcurrentBuilds() is a job property there
        concurrent_value = not any(True for _ in root.iter(
            "org.jenkinsci.plugins.workflow.job.properties.DisableConcurrentBuildsJobProperty"))
    else:
        concurrent_value = _text(concurrent).strip() == "true"
    template = base or JobDef(full_name=full_name, duration=0.0)
    return replace(template, full_name=full_name, kind=kind,
                   parameters=tuple(params) if has_params else None,
                   description=_text(root.find("description")),
                   disabled=_text(root.find("disabled")).strip() == "true",
                   concurrent=concurrent_value,
                   config_xml=text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


def job_to_xml(job: JobDef) -> str:
    """What GET config.xml answers: the posted XML if there was one, else one written from the model."""
    if job.config_xml is not None:
        return job.config_xml
    params = ""
    if job.parameters is not None:
        defs = []
        for p in job.parameters:
            body = f"<name>{escape(p.name)}</name><description>{escape(p.description)}</description>"
            if p.type == "choice":
                body += ('<choices class="java.util.Arrays$ArrayList"><a class="string-array">'
                         + "".join(f"<string>{escape(c)}</string>" for c in p.choices) + "</a></choices>")
            elif p.type == "boolean":
                body += f"<defaultValue>{str(bool(p.default)).lower()}</defaultValue>"
            elif p.default is not None:
                body += f"<defaultValue>{escape(str(p.default))}</defaultValue>"
            tag = TAG_OF[p.type]
            defs.append(f"<{tag}>{body}</{tag}>")
        params = ("<hudson.model.ParametersDefinitionProperty><parameterDefinitions>" + "".join(defs)
                  + "</parameterDefinitions></hudson.model.ParametersDefinitionProperty>")
    description = f"<description>{escape(job.description)}</description>"
    if job.kind == "pipeline":
        extra = "" if job.runs_concurrently else \
            "<org.jenkinsci.plugins.workflow.job.properties.DisableConcurrentBuildsJobProperty/>"
        return ("<?xml version='1.1' encoding='UTF-8'?>\n<flow-definition plugin=\"workflow-job\">"
                f"{description}<keepDependencies>false</keepDependencies><properties>{params}{extra}</properties>"
                '<definition class="org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition" plugin="workflow-cps">'
                "<script>echo 'simulated'</script><sandbox>true</sandbox></definition>"
                f"<triggers/><disabled>{str(job.disabled).lower()}</disabled></flow-definition>")
    return ("<?xml version='1.1' encoding='UTF-8'?>\n<project>"
            f"{description}<keepDependencies>false</keepDependencies><properties>{params}</properties>"
            '<scm class="hudson.scm.NullSCM"/><canRoam>true</canRoam>'
            f"<disabled>{str(job.disabled).lower()}</disabled>"
            "<blockBuildWhenDownstreamBuilding>false</blockBuildWhenDownstreamBuilding>"
            "<blockBuildWhenUpstreamBuilding>false</blockBuildWhenUpstreamBuilding><triggers/>"
            f"<concurrentBuild>{str(job.runs_concurrently).lower()}</concurrentBuild>"
            "<builders/><publishers/><buildWrappers/></project>")


@dataclass
class View:
    """A hudson.model.ListView (or the AllView `all`, which lists every job and cannot be deleted)."""

    name: str
    jobs: list[str] = field(default_factory=list)
    description: str = ""
    klass: str = "hudson.model.ListView"
    config_xml: str | None = None

    @property
    def is_all(self) -> bool:
        return self.klass == "hudson.model.AllView"

    def to_xml(self) -> str:
        if self.config_xml is not None:
            return self.config_xml
        names = "".join(f"<string>{escape(j)}</string>" for j in sorted(self.jobs))
        return (f"<?xml version='1.1' encoding='UTF-8'?>\n<{self.klass}><name>{escape(self.name)}</name>"
                f"<description>{escape(self.description)}</description><filterExecutors>false</filterExecutors>"
                f"<filterQueue>false</filterQueue><properties class=\"hudson.model.View$PropertyList\"/>"
                f"<jobNames><comparator class=\"hudson.util.CaseInsensitiveComparator\"/>{names}</jobNames>"
                f"<jobFilters/><columns/><recurse>false</recurse></{self.klass}>")


def view_from_xml(name: str, text: bytes | str) -> View:
    root = parse_xml(text)
    jobs = [_text(s) for names in root.iter("jobNames") for s in names.iter("string")]
    return View(name=name, jobs=jobs, description=_text(root.find("description")), klass=root.tag,
                config_xml=text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


def view_json(root_url: str, view: View, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    url = root_url if view.is_all else f"{root_url}view/{view.name}/"
    return {"_class": view.klass, "description": view.description or None, "jobs": jobs, "name": view.name,
            "property": [], "url": url}
