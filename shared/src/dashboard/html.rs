//! The dashboard's HTML: escaping, the page around every view, times, links.
//!
//! Pages are plain HTML that reads without JavaScript. One small inline script (its hash is
//! in the Content-Security-Policy, [`content_security_policy`]) rewrites `<time>` elements
//! into the viewer's time zone; without it they read in UTC.

use std::fmt::Write as _;

use base64::Engine as _;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

/// The one script of every page: times in the viewer's zone.
pub const LOCAL_TIME_SCRIPT: &str = "document.querySelectorAll('time[datetime]').forEach(function(t){var d=new Date(t.getAttribute('datetime'));if(!isNaN(d)){t.title=t.getAttribute('datetime');t.textContent=d.toLocaleString(undefined,{dateStyle:'medium',timeStyle:'short'});}});";

const STYLE: &str = "\
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--accent:#0969da;--bg:#fff;--soft:#f6f8fa}\
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.25rem;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--soft)}\
header strong{font-size:1.05rem}nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem}nav a{color:var(--accent);text-decoration:none}nav a[aria-current]{font-weight:600;text-decoration:underline}\
.who{margin-left:auto;color:var(--muted);font-size:.85rem}main{padding:1rem;max-width:1200px}\
h1{font-size:1.3rem;margin:.2rem 0 .8rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}h3{font-size:1rem;margin:1rem 0 .4rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}\
th{font-weight:600;color:var(--muted);white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}\
code{font:.85em ui-monospace,SFMono-Regular,Menlo,monospace}.muted{color:var(--muted)}\
.state{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:.8rem;border:1px solid var(--line);white-space:nowrap}\
.ok{color:var(--ok);border-color:var(--ok)}.bad{color:var(--bad);border-color:var(--bad)}.warn{color:var(--warn);border-color:var(--warn)}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}.card{border:1px solid var(--line);border-radius:.5rem;padding:.6rem .8rem}\
.card h3{margin:.1rem 0 .4rem}.charts{grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr))}svg.chart{width:100%;height:auto;display:block}\
.figures{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;margin:.3rem 0}.figures div{min-width:9rem}.figures b{display:block;font-size:1.1rem}\
ol.timeline{list-style:none;padding:0;margin:0}ol.timeline li{padding:.4rem 0;border-bottom:1px solid var(--line)}\
form.login{display:flex;flex-wrap:wrap;gap:.5rem;max-width:28rem}form.login input{flex:1;padding:.4rem;font:inherit}form.login button{padding:.4rem .9rem;font:inherit}\
@media (max-width:600px){main{padding:.6rem}table{font-size:.88rem}th,td{padding:.3rem}table.stack thead{display:none}table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}table.stack tr{border:1px solid var(--line);border-radius:.5rem;margin:0 0 .7rem;padding:.2rem .5rem}table.stack td{border:0;padding:.25rem 0}table.stack td::before{content:attr(data-label);display:block;font-size:.75rem;color:var(--muted);font-weight:600}}";

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time: UTC as text (and for machines), the viewer's zone once the script runs.
pub fn time(at: Timestamp) -> String {
    let utc = at.strftime("%Y-%m-%d %H:%M UTC").to_string();
    format!(
        "<time datetime=\"{}\">{utc}</time>",
        at.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// Where the pages live: served by `shipgate serve`, or written as files for the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Live pages with paths (`/`, `/deployments/ID`, …) that refresh themselves.
    Live,
    /// Static files side by side (`index.html`, `dora.html`), a snapshot: no refresh, and
    /// only the pages written are linked.
    Static,
}

/// The pages, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Deployment,
    Incidents,
    Backups,
    Dora,
    Login,
}

impl Site {
    /// The link to a page of the site.
    pub fn href(self, nav: Nav) -> &'static str {
        match (self, nav) {
            (Site::Live, Nav::Overview) => "/",
            (Site::Live, Nav::Incidents) => "/incidents",
            (Site::Live, Nav::Backups) => "/backups",
            (Site::Live, Nav::Dora) => "/dora",
            (Site::Live, _) => "/",
            (Site::Static, Nav::Dora) => "dora.html",
            (Site::Static, _) => "index.html",
        }
    }

    /// The link to one deployment's page, when the site has them.
    pub fn deployment_href(self, id: &str) -> Option<String> {
        match self {
            Site::Live => Some(format!("/deployments/{}", url_part(id))),
            Site::Static => None,
        }
    }

    /// A deployment's id, linked to its page when the site has one.
    pub fn deployment_link(self, id: &str) -> String {
        match self.deployment_href(id) {
            Some(href) => format!("<a href=\"{}\"><code>{}</code></a>", esc(&href), esc(id)),
            None => format!("<code>{}</code>", esc(id)),
        }
    }
}

/// How often live pages reload themselves.
pub const REFRESH_SECS: u32 = 30;

/// A whole page.
pub fn page(site: Site, nav: Nav, title: &str, signed_in: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    if site == Site::Live && nav != Nav::Login {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"
        );
    }
    let _ = write!(
        out,
        "<title>{} · shipgate</title><style>{STYLE}</style></head><body>",
        esc(title)
    );
    out.push_str("<header><strong>shipgate</strong><nav>");
    let links: &[(Nav, &str)] = match site {
        Site::Live => &[
            (Nav::Overview, "Overview"),
            (Nav::Incidents, "Incidents & rollbacks"),
            (Nav::Backups, "Backups"),
            (Nav::Dora, "DORA"),
        ],
        Site::Static => &[(Nav::Overview, "Overview"), (Nav::Dora, "DORA")],
    };
    for (target, label) in links {
        let current = if *target == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<a href=\"{}\"{current}>{label}</a>",
            site.href(*target)
        );
    }
    out.push_str("</nav>");
    if let Some(who) = signed_in {
        let _ = write!(out, "<span class=\"who\">signed in as {}</span>", esc(who));
    }
    out.push_str("</header><main>");
    out.push_str(body);
    let _ = write!(
        out,
        "</main><script>{LOCAL_TIME_SCRIPT}</script></body></html>"
    );
    out
}

/// The Content-Security-Policy of every page: nothing from elsewhere, inline styles, and only
/// the one script whose hash it names.
pub fn content_security_policy() -> String {
    let hash = Sha256::digest(LOCAL_TIME_SCRIPT.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(hash);
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// A state as a coloured badge.
pub fn badge(text: &str, tone: Tone) -> String {
    let class = match tone {
        Tone::Ok => "state ok",
        Tone::Bad => "state bad",
        Tone::Warn => "state warn",
        Tone::Plain => "state",
    };
    format!("<span class=\"{class}\">{}</span>", esc(text))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Ok,
    Bad,
    Warn,
    Plain,
}

/// A table with a header row; cells are HTML already. On a phone each row stacks into a
/// card, every cell under its column's name.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<div class=\"scroll\"><table class=\"stack\"><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let label = headers.get(i).copied().unwrap_or_default();
            let _ = write!(out, "<td data-label=\"{}\">{cell}</td>", esc(label));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(url_part("dep 1/x"), "dep%201%2Fx");
    }

    #[test]
    fn times_read_in_utc_without_the_script() {
        let at: Timestamp = "2026-03-02T10:05:09Z".parse().unwrap();
        assert_eq!(
            time(at),
            "<time datetime=\"2026-03-02T10:05:09Z\">2026-03-02 10:05 UTC</time>"
        );
    }

    #[test]
    fn the_policy_allows_exactly_the_page_script() {
        let csp = content_security_policy();
        assert!(csp.contains("script-src 'sha256-"));
        assert!(csp.starts_with("default-src 'none'"));
        let html = page(
            Site::Live,
            Nav::Overview,
            "Overview",
            Some("alice"),
            "<p>x</p>",
        );
        assert!(html.contains(LOCAL_TIME_SCRIPT));
        assert!(html.contains("http-equiv=\"refresh\""));
        assert!(html.contains("signed in as alice"));
        let snapshot = page(Site::Static, Nav::Dora, "DORA", None, "");
        assert!(!snapshot.contains("http-equiv=\"refresh\""));
        assert!(snapshot.contains("href=\"index.html\""));
    }
}
