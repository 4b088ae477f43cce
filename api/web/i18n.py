"""The pages' labels in English and Chinese: a small message catalogue, chosen with ``?lang=zh|en``."""

from __future__ import annotations

LANGS = ("en", "zh")

MESSAGES: dict[str, tuple[str, str]] = {
    "app": ("PPS data safe-room", "PPS 数据安全屋"),
    "login": ("Log in", "登录"),
    "logout": ("Log out", "退出"),
    "token": ("API token", "API 令牌"),
    "login_hint": (
        "Paste the API token your platform operator issued to your organisation (pps_...). "
        "The token is checked once and never stored in your browser.",
        "粘贴平台运营方为贵机构签发的 API 令牌（pps_...）。令牌仅校验一次，不会保存在浏览器中。",
    ),
    "signed_in_as": ("Signed in as", "当前登录"),
    "error": ("Error", "错误"),
    "back": ("Back", "返回"),
    "home": ("Home", "首页"),
    "none": ("Nothing here yet.", "暂无内容。"),
    # subject
    "subject_portal": ("Enterprise portal", "企业门户"),
    "my_consents": ("My consents", "我的授权"),
    "my_data": ("My data", "我的数据"),
    "access_log": ("Who accessed my data", "数据访问记录"),
    "pending_requests": ("Pending consent requests", "待处理的授权请求"),
    "no_pending": ("No bank is waiting for your answer.", "没有待您处理的银行请求。"),
    "no_consents": ("You have not granted any consent.", "您尚未授予任何授权。"),
    "grant_consent": ("Grant consent", "授予授权"),
    "bank": ("Bank", "银行"),
    "purpose": ("Purpose", "用途"),
    "dataset": ("Dataset", "数据集"),
    "fields": ("Fields", "字段"),
    "fields_hint": ('comma-separated; "*" = every C1 field', '逗号分隔；"*" 表示全部 C1 字段'),
    "operations": ("Operations", "操作"),
    "valid_until": ("Valid until", "有效期至"),
    "max_uses": ("Maximum uses", "最多使用次数"),
    "optional": ("optional", "可选"),
    "grant": ("Grant", "授权"),
    "revoke": ("Revoke", "撤回"),
    "approve": ("Approve", "同意"),
    "deny": ("Deny", "拒绝"),
    "reason": ("Reason", "理由"),
    "state": ("State", "状态"),
    "uses": ("Uses", "已用次数"),
    "scope": ("Scope", "范围"),
    "provider": ("Provider", "提供方"),
    "version": ("Version", "版本"),
    "no_records": ("No provider holds records about you.", "尚无数据提供方持有您的记录。"),
    "no_access": ("Nobody has accessed your data yet.", "尚无人访问您的数据。"),
    "verify": ("Verify", "验证"),
    "verify_hint": (
        "Verify checks, in your browser, that the entry is in the signed ledger: SHA-256 over the inclusion "
        "proof (RFC 9162) up to the checkpoint's root, and the checkpoint's Ed25519 signature.",
        "“验证”在您的浏览器中检查该记录确在已签名账本中：按 RFC 9162 对包含证明做 SHA-256 计算至检查点根哈希，并校验检查点的 Ed25519 签名。",
    ),
    "when": ("When", "时间"),
    "who": ("Who", "访问方"),
    "action": ("Action", "动作"),
    "released": ("Released", "输出"),
    "consent_granted": ("Consent granted.", "授权已授予。"),
    "consent_revoked": (
        "Consent revoked: it stops at once, running jobs included.",
        "授权已撤回，立即生效（包括运行中的任务）。",
    ),
    "consent_approved": ("Request approved.", "请求已同意。"),
    "my_keys": ("My keys", "我的密钥"),
    "keys_hint": (
        "Your consent is signed by your own key, never by the platform. Register a passkey on this device after "
        "your legal representative's real-name check, or enrol a local key with pps-client keys enrol.",
        "您的授权由您自己的密钥签署，平台无法代签。请在法定代表人实名核验后在本设备上注册通行密钥，或用 pps-client keys enrol 登记本地密钥。",
    ),
    "no_keys": ("You have not enrolled a key yet.", "您尚未登记密钥。"),
    "register_passkey": ("Register a passkey", "注册通行密钥"),
    "representative_name": ("Legal representative", "法定代表人"),
    "representative_id": ("Representative's ID number", "法定代表人身份证号"),
    "passkey_enrolled": (
        "Passkey registered: it now signs your consent.",
        "通行密钥已注册，今后由其签署您的授权。",
    ),
    "sign_consent": ("Sign with your passkey", "用通行密钥签署"),
    "sign_hint": (
        "Check the terms: your passkey signs exactly this text, and the consent exists only once it is signed.",
        "请核对条款：您的通行密钥将签署以下文本，签署后授权方才生效。",
    ),
    "algorithm": ("Algorithm", "算法"),
    "enrolled": ("Enrolled", "登记时间"),
    "consent_denied": ("Request denied.", "请求已拒绝。"),
    "grant_on_this": ("Grant consent on this dataset", "就此数据集授权"),
    # auditor
    "auditor_console": ("Auditor console", "审计控制台"),
    "ledger": ("Ledger", "账本"),
    "checkpoints": ("Checkpoints", "检查点"),
    "anomalies": ("Anomalies", "异常"),
    "filter": ("Filter", "筛选"),
    "actor": ("Actor (org id)", "操作方（机构 ID）"),
    "subject": ("Subject (USCC)", "主体（统一社会信用代码）"),
    "since": ("Since", "起始"),
    "until": ("Until", "截止"),
    "export_csv": ("Export CSV (with proofs)", "导出 CSV（含证明）"),
    "export_json": ("Export JSON (with proofs)", "导出 JSON（含证明）"),
    "no_entries": ("No entry matches these filters.", "没有符合筛选条件的记录。"),
    "next_page": ("Next page", "下一页"),
    "tree_size": ("Tree size", "树大小"),
    "root": ("Root hash", "根哈希"),
    "signature": ("Signature", "签名"),
    "consistency": ("Consistent with the previous", "与上一检查点一致"),
    "no_checkpoints": ("No checkpoint has been published yet.", "尚未发布检查点。"),
    "near_limits": ("Consents near their limits", "接近限额的授权"),
    "denials_by_bank": ("Denials by bank", "各银行被拒次数"),
    "no_anomalies": ("Nothing worth a look.", "暂无值得关注的情况。"),
    # bank
    "bank_console": ("Bank console", "银行控制台"),
    "consent_requests": ("Consents and requests", "授权与请求"),
    "jobs": ("Jobs", "任务"),
    "progress": ("Progress", "进度"),
    "result": ("Result", "结果"),
    "download": ("Download", "下载"),
    "no_jobs": ("You have not submitted any job.", "您尚未提交任务。"),
    "budget": ("Privacy budget (ε)", "隐私预算（ε）"),
    "remaining": ("remaining", "剩余"),
    "models": ("Models", "模型"),
    "no_models": ("No model is registered for your bank yet.", "贵行尚无已登记的模型。"),
    "registry_missing": (
        "The model registry is not available on this server.",
        "此服务器未提供模型登记服务。",
    ),
    "request_consent": ("Ask an enterprise for consent", "向企业申请授权"),
    "requested": ("Request sent.", "请求已发送。"),
    # operator
    "operator": ("Operator", "运营"),
    "organisations": ("Organisations", "机构"),
    "tokens": ("Tokens", "令牌"),
    "issue_token": ("Issue a token", "签发令牌"),
    "label": ("Label", "标签"),
    "ttl_days": ("Valid for (days)", "有效天数"),
    "token_shown_once": (
        "Copy this token now: it is shown once and cannot be shown again.",
        "请立即复制此令牌：它只显示一次。",
    ),
    "token_revoked": ("Token revoked.", "令牌已撤销。"),
    "current_token": ("Your current API token (to confirm it is you)", "您当前的 API 令牌（确认身份）"),
    "reauth_hint": (
        "A new token is issued only after you enter a valid API token of your organisation again, and it "
        "expires no later than the token you logged in with:",
        "只有再次输入贵机构有效的 API 令牌后才会签发新令牌；新令牌的到期时间不晚于您登录所用令牌的到期时间：",
    ),
    "create_org": ("Onboard an organisation", "新增机构"),
    "name": ("Name", "名称"),
    "role": ("Role", "角色"),
    "create": ("Create", "创建"),
    "datasets": ("Datasets", "数据集"),
    "lineage": ("Lineage", "数据血缘"),
    "health": ("Service health", "服务状态"),
    "no_datasets": ("No dataset.", "暂无数据集。"),
    "expires": ("Expires", "到期"),
    "created": ("Created", "创建时间"),
}


def translate(key: str, lang: str) -> str:
    """The label for ``key`` in ``lang``; unknown keys show as themselves (a visible gap, not a crash)."""
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "zh" else pair[0]
