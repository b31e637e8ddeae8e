"""A month of care for one community as a wall chart: the month's deadlines, how each went, how each
escalation ended. The fonts and the CSV writer are the ledger report's own (they are not about the ledger)."""

from datetime import date
from pathlib import Path
from typing import Any

from services.ledger.reports import cjk_font, require_glyphs, write_csv

BARS = [("on_time", "按时", "#2e7d32"), ("late", "迟到", "#f9a825"), ("missed", "未签到", "#c62828")]
ENDINGS = {"checked_in": "已有人签到", "open": "仍在升级", "plan_ended": "计划已结束"}


def chart_texts(report: dict[str, Any], community: str, made: date) -> dict[str, str]:
    year, month = report["month"].split("-")
    endings = "，".join(f"{ENDINGS[k]} {v} 次" for k, v in report["endings"].items() if v) or "无"
    return {
        "title": f"{community}  {year}年{int(month)}月关爱服务月报",
        "headline": f"应到 {report['due']} 次 · 按时 {report['on_time']} 次 · 迟到 {report['late']} 次 · "
                    f"未签到 {report['missed']} 次",
        "escalations": f"逐级提醒 {report['escalations']} 次：{endings}",
        "footer": f"数据来源：邻里关爱服务　制表日期：{made.year}年{made.month}月{made.day}日",
    }


def write_report_csv(report: dict[str, Any], path: Path) -> None:
    write_csv(path, [line.split(",") for line in report["csv"].splitlines()])


def render_chart(report: dict[str, Any], path: Path, community: str, made: date) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.font_manager import FontProperties

    font = cjk_font("sans")
    words = chart_texts(report, community, made)
    require_glyphs(font, [*words.values(), *(name for _, name, _ in BARS)])

    def at(size: float) -> FontProperties:
        return FontProperties(fname=str(font), size=size)

    fig = plt.figure(figsize=(11.69, 8.27), dpi=150)
    try:
        fig.text(0.5, 0.93, words["title"], ha="center", fontproperties=at(26), color="#333333")
        fig.text(0.5, 0.85, words["headline"], ha="center", fontproperties=at(22), color="#b71c1c")
        fig.text(0.5, 0.79, words["escalations"], ha="center", fontproperties=at(16), color="#333333")
        fig.text(0.5, 0.03, words["footer"], ha="center", fontproperties=at(11), color="#666666")
        ax = fig.add_axes((0.2, 0.15, 0.7, 0.55))
        values = [report[key] for key, _, _ in BARS]
        ax.barh(range(len(BARS)), values, color=[color for _, _, color in BARS], height=0.6)
        ax.set_yticks(range(len(BARS)), [name for _, name, _ in BARS])
        for tick in ax.get_yticklabels():
            tick.set_fontproperties(at(18))
        ax.set_ylim(len(BARS) - 0.5, -0.5)
        top = max(values) or 1
        ax.set_xlim(0, top * 1.18)
        for y, value in enumerate(values):
            ax.text(value + top * 0.01, y, f"{value} 次", va="center", fontproperties=at(17))
        ax.set_xticks([])
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
        fig.savefig(path, format=path.suffix.lower()[1:], metadata={"Title": words["title"]})
    finally:
        plt.close(fig)
