"""The portal of a farm or herding household (or an individual-business owner): Chinese first, phone-sized.

Plain words, one column, large touch targets. What it does, all through the API routes' own functions
(:func:`api.web.core.call`): see who the platform knows you as (the masked ID number and the person code),
which banks may use which of your data and withdraw that at once, grant a bank consent with the separate
grants the law asks for (each sensitive item ticked on its own, the Art. 14 warning read first), take one of
the two free reports of the year, read every access to your data, and ask why a bank's model assessed you
as it did (PIPL Art. 24, :mod:`pps.services.explanation`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, Response

from api.deps import RuntimeDep
from api.routers import consent, persons, scoring
from pps.errors import InvalidInput, NotFound
from pps.governance.consent import PURPOSES
from pps.governance.products import PRODUCTS
from pps.identity.persons import is_personal
from pps.infra.storage.tables import ConsentState, Organization, Role, utcnow
from pps.runtime import Runtime
from pps_wire.schemas import ExplainIn
from pps_wire.schemas.persons import ErasureIn, PersonConsentGrant

from .core import (
    LANG_COOKIE,
    PREFIX,
    FormDep,
    PageRoute,
    Web,
    WebDep,
    call,
    one,
    redirect,
    render,
    require,
)
from .i18n import MESSAGES
from .passkeys import person_grant_to_sign

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=PageRoute)

MESSAGES.update(
    {
        "person_portal": ("My credit (household)", "我的信用"),
        "person_you_are": ("The platform knows you as", "平台上的您"),
        "person_id": ("ID number", "身份证号"),
        "person_code": ("Platform number (give it to your bank)", "平台编号（可告诉银行）"),
        "person_free_left": ("Free reports left this year", "今年还可免费查询"),
        "person_times": ("", "次"),
        "person_get_report": ("Get my free credit report", "免费查看我的信用报告"),
        "person_banks": ("Banks that may use my data", "哪些银行可以用我的数据"),
        "person_no_banks": ("No bank may use your data.", "目前没有银行可以用您的数据。"),
        "person_stop": ("Stop now", "马上停止"),
        "person_allow": ("Let a bank use my data", "允许银行使用我的数据"),
        "person_next": ("Next", "下一步"),
        "person_read_warning": ("Please read first", "请先读一读"),
        "person_separate": (
            "I agree that the platform gives this bank the items I tick below, for this purpose only.",
            "我同意平台只为这个用途，把我下面勾选的内容提供给这家银行。",
        ),
        "person_tick_each": ("Tick each item you agree to give", "请逐项勾选您同意提供的内容"),
        "person_understood": ("I have read the warning above", "我已读过上面的提示"),
        "person_confirm": ("Confirm", "确认授权"),
        "person_history": ("Who looked at my data", "谁看过我的数据"),
        "person_no_history": ("Nobody yet.", "还没有人看过。"),
        "person_notices": ("Notices to me", "给我的通知"),
        "person_assessments": (
            "How my data is protected (impact assessments)",
            "我的数据怎样被保护（影响评估）",
        ),
        "person_report": ("My credit report", "我的信用报告"),
        "person_records": ("What providers hold about me", "各部门登记的我的信息"),
        "person_no_records": ("No records.", "没有记录。"),
        "person_waiting": ("Banks asking you", "等您回复的银行"),
        "person_days": ("Valid for (days)", "有效天数"),
        "person_product": ("For which loan", "用于哪种贷款"),
        "person_done_granted": (
            "Done: the bank may use what you ticked.",
            "已授权：银行只能用您勾选的内容。",
        ),
        "person_passkey_hint": (
            "Your consent is signed with your own passkey (on your phone); register it once, after the "
            "real-name check:",
            "您的授权由您自己的通行密钥（在您的手机上）签名；实名核验后登记一次即可：",
        ),
        "person_done_revoked": (
            "Stopped: the bank can no longer use your data.",
            "已停止：这家银行不能再用您的数据。",
        ),
        "person_decisions": ("Banks' automatic assessments of me", "银行对我的自动评估"),
        "person_no_decisions": ("No bank has assessed you automatically.", "还没有银行对您做过自动评估。"),
        "person_why": ("Why? Explain it to me", "为什么？给我解释"),
        "person_explain": ("Why the bank's model assessed me so", "银行的模型为什么这样评估我"),
        "person_explain_intro": (
            "Computed inside the protected enclave from the bank's approved model. It shows what mattered most "
            "for you compared with the average household, never the bank's formula or anyone else's data.",
            "由受保护的安全环境根据银行经审核的模型算出：和一般农牧户相比，对您影响最大的几项。"
            "不会显示银行的公式，也不会显示别人的数据。",
        ),
        "person_used_for": ("Used for", "用于"),
        "person_result": ("Result the bank received", "银行得到的结果"),
        "person_raises": ("raises your risk", "让您的风险变高"),
        "person_lowers": ("lowers your risk", "让您的风险变低"),
        "person_weight": ("share", "占比"),
        "person_times_used": ("times", "次"),
        "person_erase": ("Delete my data and leave", "删除我的数据并退出"),
        "person_erase_warn": (
            "Every bank loses your consent at once, your records are deleted from every department's data, and "
            "your account closes. This cannot be undone.",
            "所有银行的授权马上停止，各部门登记的您的信息都会删除，您的账户也会关闭。删除后不能恢复。",
        ),
        "person_erase_confirm": ("Yes, delete everything", "确认全部删除"),
        "person_erased": ("Your data was deleted.", "您的数据已删除。"),
        "person_object": (
            "If a record is wrong, you can object to it (free).",
            "如果某项记录不对，您可以免费提出异议。",
        ),
    }
)

_FEATURES_ZH = {
    "hh_grade_score": "信用户等级",
    "hh_log_livestock": "牲畜数量",
    "hh_log_land": "承包地和草场面积",
    "hh_insured": "是否参加养殖或种植保险",
    "hh_log_subsidies": "去年领到的政府补贴",
    "hh_cooperative_member": "是否加入合作社",
    "hh_family_farm": "是否登记为家庭农场",
    "hh_log_sales_income": "平均每月卖出收入",
    "hh_min_yield_index": "草场或庄稼最差月份的情况",
}

_ACTIONS_ZH = {
    "person.onboard": "您在平台登记",
    "org.create": "开通账户",
    "token.issue": "发放登录凭证",
    "consent.grant": "您授权银行",
    "consent.revoke": "您停止授权",
    "consent.request": "银行请求授权",
    "person.separate_consent": "您逐项单独同意",
    "policy.admit": "银行申请使用（已核对授权）",
    "policy.release": "银行拿到结果",
    "person.free_report": "您查看免费报告",
    "person.negative_notice": "数据提供方通知您",
    "subject.self_query": "您查看自己的信息",
    "dataset.upload": "部门上传数据",
}


def _person_page(page: Web) -> Web:
    """Chinese unless the person chose English: ``?lang=`` or the cookie, else ``zh``."""
    request = page.request
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return replace(page, lang=asked if asked in ("en", "zh") else "zh")


def _require_person(page: Web, rt: Runtime) -> Web:
    require(page, Role.subject)
    with rt.db.transaction(write=False) as s:
        personal = page.caller.uscc is not None and is_personal(s, page.caller.uscc)
    if not personal:
        raise NotFound("this page is for households and individual-business owners")
    return _person_page(page)


def _labels(page: Web) -> dict[str, str]:
    names = {
        p.purpose: f"{p.name_zh} ({p.name_en})" if page.lang == "en" else p.name_zh for p in PRODUCTS.values()
    }
    return {k: names.get(k, v) for k, v in PURPOSES.items()}


@router.get("/person", response_class=HTMLResponse)
def person_home(page: WebDep, rt: RuntimeDep) -> Response:
    page = _require_person(page, rt)
    overview = call(page, persons.overview, page.caller, rt)
    found = call(page, consent.list_consents, page.caller, rt, limit=200, state=None, after=None)
    with rt.db.transaction(write=False) as s:
        banks = {o.id: o.name for o in s.query(Organization).filter(Organization.role == Role.bank)}
        datasets = [
            (d.id, d.name)
            for d in rt.datasets.list_datasets(s, provider_org_id=None, limit=200)
            if d.name.startswith("household")
        ]
    decisions = call(page, scoring.my_decisions, page.caller, rt)
    return render(
        page,
        page.request,
        "person.html",
        decisions=decisions,
        flash=page.request.query_params.get("done"),
        me=overview,
        active=[c for c in found.items if c.state == ConsentState.active.value and not c.expired],
        pending=[c for c in found.items if c.state == ConsentState.requested.value],
        banks=banks,
        datasets=datasets,
        purposes=_labels(page),
        actions=_ACTIONS_ZH,
    )


def _grant_body(form: dict[str, list[str]]) -> PersonConsentGrant:
    days = one(form, "days", "180")
    if not days.isdigit() or not 1 <= int(days) <= 1096:
        raise InvalidInput("choose between 1 and 1096 days")
    fields = form.get("fields", [])
    if not fields:
        raise InvalidInput("tick at least one item the bank may use / 请至少勾选一项")
    return PersonConsentGrant.model_validate(
        {
            "bank_org_id": one(form, "bank_org_id"),
            "purpose": one(form, "purpose"),
            "scope": [{"dataset_id": one(form, "dataset_id"), "fields": fields or ["*"]}],
            "operations": ["score"],
            "valid_until": utcnow() + timedelta(days=int(days)),
            "separate": {
                "provide_to_bank": one(form, "provide_to_bank") == "yes",
                "sensitive_fields": {one(form, "dataset_id"): form.get("granted", [])},
                "warning_sha256": one(form, "warning_sha256") if one(form, "understood") == "yes" else None,
            },
        }
    )


@router.post("/person/consents/preview", response_class=HTMLResponse)
def person_preview(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    """Two screens: tick the items the bank may use (those the product's data contract names), then read
    the warning and confirm, with each sensitive item listed for its separate grant."""
    page = _require_person(page, rt)
    dataset_id, purpose = one(form, "dataset_id"), one(form, "purpose")
    with rt.db.transaction(write=False) as s:
        ds = rt.datasets.get(s, dataset_id)
        schema = rt.datasets.schema_of_dataset(ds)
        product = PRODUCTS.get(purpose)
        allowed = product.contract.get(ds.name, frozenset()) if product else None
        candidates = {
            c.name: c.description
            for c in schema.columns
            if c.name not in schema.key_columns
            and not c.never_released
            and (allowed is None or c.name in allowed)
        }
    ctx: dict[str, Any] = {"days": one(form, "days", "180"), "purposes": _labels(page), "columns": candidates}
    if not form.get("fields"):
        ctx |= {"stage": "tick", "form": {k: one(form, k) for k in ("bank_org_id", "purpose", "dataset_id")}}
        return render(page, page.request, "person_grant.html", **ctx)
    body = _grant_body(form)
    shown = call(page, persons.preview, body, page.caller, rt)
    ctx |= {"stage": "confirm", "body": body, "preview": shown, "chosen": body.scope[0].fields}
    return render(page, page.request, "person_grant.html", **ctx)


@router.post("/person/consents")
def person_grant(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    """The person confirms: the page that has its passkey sign the terms and the separate grants together
    (:func:`api.web.passkeys.person_grant_to_sign`); the consent exists only once that signature checks."""
    page = _require_person(page, rt)
    return person_grant_to_sign(page, rt, _grant_body(form))


@router.post("/person/consents/{consent_id}/stop")
def person_stop(
    consent_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep, form: FormDep
) -> Response:
    page = _require_person(page, rt)
    call(page, consent.revoke, consent_id, page.caller, rt)
    return redirect(f"{PREFIX}/person", done="person_done_revoked")


@router.post("/person/report", response_class=HTMLResponse)
def person_report(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    page = _require_person(page, rt)
    report = call(page, persons.free_report, page.caller, rt)
    return render(
        page, page.request, "person_report.html", report=report, actions=_ACTIONS_ZH, purposes=_labels(page)
    )


@router.post("/person/decisions/explain", response_class=HTMLResponse)
def person_explain(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    """PIPL Art. 24: why a bank's approved model assessed the person as it did, in plain words."""
    page = _require_person(page, rt)
    body = ExplainIn.model_validate(
        {"bank_org_id": one(form, "bank_org_id"), "model_digest": one(form, "model_digest")}
    )
    why = call(page, scoring.explain_decision, body, page.caller, rt)
    names = {
        d.feature: (_FEATURES_ZH.get(d.feature, d.description) if page.lang == "zh" else d.description)
        for d in why.drivers
    }
    return render(page, page.request, "person_explain.html", why=why, names=names, purposes=_labels(page))


@router.post("/person/erase", response_class=HTMLResponse)
def person_erase(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    """PIPL Art. 47 (and Art. 15: withdrawal as easy as consent): one confirmed tap deletes the person's data."""
    page = _require_person(page, rt)
    if one(form, "confirm") != "yes":
        raise InvalidInput("tick the box to confirm / 请勾选确认")
    done = call(page, persons.erase, ErasureIn(confirm=True), page.caller, rt)
    return render(page, page.request, "person_erased.html", done=done)
