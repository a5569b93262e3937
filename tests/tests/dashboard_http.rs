//! The dashboard of a real `shipgate serve`, over HTTP: its own listener, who may look (a
//! token as a bearer or a session cookie, a reverse proxy's user header), what an
//! unauthenticated request learns (nothing), and the headers every page carries. The pages'
//! content, in a real browser, is `dashboard_browser.rs`.

#[path = "common/serve.rs"]
mod serve;

use std::time::Duration;

use reqwest::redirect::Policy as Redirects;
use reqwest::StatusCode;
use serve::{logged_address, run, shipgate, stderr, Server, Workspace};

const TOKEN: &str = "dashboard-token-used-only-by-these-tests-0123";

/// The dashboard's address, from the line the server logs when it listens.
fn dashboard_base(server: &Server) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Some(addr) =
            logged_address(&server.ws.log(), 0, "the dashboard is serving", "dashboard")
        {
            return format!("http://{addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the dashboard never listened:\n{}", server.logs());
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Redirects::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_token_signs_in_by_bearer_or_by_a_session_cookie_and_nothing_else_gets_in() {
    let mut server = Server::launch(
        Workspace::new(),
        &[("SHIPGATE_DASHBOARD_TOKEN", TOKEN)],
        &["--no-schedule", "--dashboard-listen", "127.0.0.1:0"],
    )
    .await;
    let base = dashboard_base(&server);
    assert_ne!(base, server.base, "the dashboard has its own listener");
    let http = client();

    // Unauthenticated: 401 with the sign-in form, for pages and for paths that do not exist.
    for path in ["/", "/dora", "/deployments/dep-1", "/no-such-page"] {
        let resp = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"shipgate dashboard\""
        );
        let body = resp.text().await.expect("body");
        assert!(body.contains("<form class=\"login\" method=\"post\" action=\"/login\">"));
        assert!(!body.contains("Overview</h1>"), "{path}");
    }
    let wrong = http
        .get(format!("{base}/"))
        .bearer_auth("dashboard-token-used-only-by-these-tests-0124")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The bearer token reads every page, with the headers that keep it to itself.
    for path in ["/", "/incidents", "/backups", "/dora"] {
        let resp = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        let csp = h["content-security-policy"].to_str().expect("csp");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
    }
    let missing = http
        .get(format!("{base}/deployments/dep-none"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Signing in: a wrong token is refused, the right one sets a session cookie that is not
    // the token, and the cookie reads the pages.
    let refused = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=not-it")
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("set-cookie").is_none());
    let signed_in = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("POST");
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.starts_with("shipgate_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(TOKEN));
    let session = cookie.split(';').next().expect("pair").to_string();
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("GET");
    assert_eq!(page.status(), StatusCode::OK);
    let body = page.text().await.expect("body");
    assert!(body.contains("<h1>Overview</h1>"));
    assert!(body.contains("Nothing deployed here yet."));
    assert!(!server.logs().contains(TOKEN), "the token is never logged");

    // The webhook port does not serve the dashboard.
    let webhook_port = http
        .get(server.url("/dora"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(webhook_port.status(), StatusCode::NOT_FOUND);
    server.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn behind_a_reverse_proxy_the_user_header_is_required_and_shown() {
    let mut server = Server::launch(
        Workspace::new(),
        &[("SHIPGATE_DASHBOARD_USER_HEADER", "X-Forwarded-User")],
        &["--no-schedule", "--dashboard-listen", "127.0.0.1:0"],
    )
    .await;
    let base = dashboard_base(&server);
    let http = client();
    let anonymous = http.get(format!("{base}/")).send().await.expect("GET");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let alice = http
        .get(format!("{base}/"))
        .header("X-Forwarded-User", "alice@example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(alice.status(), StatusCode::OK);
    assert!(alice
        .text()
        .await
        .expect("body")
        .contains("signed in as alice@example.com"));
    server.terminate(Duration::from_secs(10));
}

#[test]
fn a_dashboard_others_can_reach_without_sign_in_is_refused_at_start() {
    let ws = Workspace::new();
    let out = run(shipgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-schedule"])
        .args(["--dashboard-listen", "0.0.0.0:0"])
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy())
        .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", serve::SECRET));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the dashboard would listen on 0.0.0.0:0, which is not a loopback address, without authentication: set SHIPGATE_DASHBOARD_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(
        !ws.data().join("shipgate.db").exists(),
        "nothing was started"
    );
    // A short token is refused too, naming the variable and never echoing it.
    let out = run(shipgate()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-schedule",
            "--dashboard",
        ])
        .arg("--data")
        .arg(ws.data())
        .arg("--policy")
        .arg(ws.policy())
        .env("SHIPGATE_GITHUB_WEBHOOK_SECRET", serve::SECRET)
        .env("SHIPGATE_DASHBOARD_TOKEN", "short-secret"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SHIPGATE_DASHBOARD_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("short-secret"));
}
