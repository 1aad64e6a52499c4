//! The review console in a real headless Chromium against a real server on loopback: sign in,
//! search a person by ID number, open the record and its history, return it with a comment that
//! the officer's phone receives at its next sync; a reviewer of another station is refused.

use std::future::Future;
use std::path::PathBuf;

use baylink_domain::EntityKind;
use baylink_tests::browser::Browser;
use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE};
use fantoccini::Locator;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots")
}

/// Runs a browser scenario; on failure the page is saved as a screenshot before the test fails.
fn in_browser<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(std::sync::Arc<Browser>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let browser = std::sync::Arc::new(Browser::start().await);
        let outcome = scenario(browser.clone()).await;
        if let Err(why) = outcome {
            let shot = browser.screenshot(&screenshots(), name).await;
            panic!("{why} (screenshot: {shot:?})");
        }
        if let Ok(browser) = std::sync::Arc::try_unwrap(browser) {
            browser.close().await;
        }
    });
}

async fn sign_in(browser: &Browser, base: &str, username: &str) -> Result<(), String> {
    let c = &browser.client;
    c.goto(&format!("{base}/console/login"))
        .await
        .map_err(|e| e.to_string())?;
    let form = c
        .form(Locator::Css("form[action='/console/login']"))
        .await
        .map_err(|e| e.to_string())?;
    form.set_by_name("username", username)
        .await
        .map_err(|e| e.to_string())?;
    form.set_by_name("password", PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    form.submit().await.map_err(|e| e.to_string())?;
    wait_for(browser, "header nav").await?;
    let heading = wait_for(browser, "main h1").await?;
    let text = heading.text().await.map_err(|e| e.to_string())?;
    if text != "概览" {
        return Err(format!("signed in to `{text}`, not the dashboard"));
    }
    Ok(())
}

/// Waits (up to 10 s) for an element of the next page.
async fn wait_for(browser: &Browser, css: &str) -> Result<fantoccini::elements::Element, String> {
    browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("waiting for `{css}`: {e}"))
}

/// Waits (up to 10 s) until the browser is at an address containing `needle`.
async fn wait_for_url(browser: &Browser, needle: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let url = browser
            .client
            .current_url()
            .await
            .map_err(|e| e.to_string())?;
        if url.as_str().contains(needle) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the browser never went to `{needle}`: at {url}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits (up to 10 s) until the page's text contains `needle`, and returns it.
async fn wait_for_text(browser: &Browser, needle: &str) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = page_text(browser).await.unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the page never said `{needle}`:\n{text}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn page_text(browser: &Browser) -> Result<String, String> {
    let body = browser
        .client
        .find(Locator::Css("body"))
        .await
        .map_err(|e| e.to_string())?;
    body.text().await.map_err(|e| e.to_string())
}

#[test]
fn a_reviewer_finds_a_person_reads_the_history_and_returns_the_record_to_the_officer() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_reviewer("r006", "441303006");
    let mut phone = Device::new("o1");
    phone.login(&server, "o1");
    let id = phone.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", "11010519491231002X"),
            ("name", "王芳"),
            ("phone", "13800138000"),
        ],
    );
    phone.sync();
    let base = server.url.clone();
    in_browser("return_a_record", |browser| async move {
        sign_in(&browser, &base, "r006").await?;
        let c = &browser.client;
        // From the dashboard to the list of persons, as a reviewer clicks.
        c.find(Locator::Css("nav a[href='/console/records?kind=person']"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        let search = c
            .form(Locator::Css("form.filters"))
            .await
            .map_err(|e| e.to_string())?;
        search
            .set_by_name("q", "110105194912")
            .await
            .map_err(|e| e.to_string())?;
        search.submit().await.map_err(|e| e.to_string())?;
        // The list before the search may hold the same link: wait for the search's own page.
        wait_for_url(&browser, "q=110105194912").await?;
        // The record's link carries the list's filters (`?queue=…`).
        let link = format!("a[href^='/console/records/{id}']");
        wait_for(&browser, &link).await?;
        let list = page_text(&browser).await?;
        if !list.contains("110105************") || list.contains("11010519491231002X") {
            return Err(format!(
                "the list should show the masked ID number only:\n{list}"
            ));
        }
        c.find(Locator::Css(&link))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        let record = wait_for_text(&browser, "修改历史").await?;
        for expected in ["修改历史", "o1", "王芳", "待审核"] {
            if !record.contains(expected) {
                return Err(format!("record page lacks `{expected}`:\n{record}"));
            }
        }
        let review = c
            .form(Locator::Css("#review form[action$='/review']"))
            .await
            .map_err(|e| e.to_string())?;
        review
            .set_by_name("comment", "户籍地址未填写")
            .await
            .map_err(|e| e.to_string())?;
        review
            .submit_with(Locator::Css("button[value='return']"))
            .await
            .map_err(|e| e.to_string())?;
        let after = wait_for_text(&browser, "已退回").await?;
        if !after.contains("户籍地址未填写") {
            return Err(format!("the record was not returned:\n{after}"));
        }
        Ok(())
    });
    phone.sync();
    let returned = phone.store.returned().expect("returned records");
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].comment, "户籍地址未填写");
}

#[test]
fn a_reviewer_of_another_station_is_refused_the_record() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_reviewer("r007", "441303007");
    let mut phone = Device::new("o1");
    phone.login(&server, "o1");
    let id = phone.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", "11010519491231002X"),
            ("name", "王芳"),
        ],
    );
    phone.sync();
    let base = server.url.clone();
    in_browser("other_station", |browser| async move {
        sign_in(&browser, &base, "r007").await?;
        browser
            .client
            .goto(&format!("{base}/console/records/{id}"))
            .await
            .map_err(|e| e.to_string())?;
        let text = wait_for_text(&browser, "出错了").await?;
        if !text.contains("出错了（404）") || text.contains("王芳") {
            return Err(format!(
                "another station's reviewer saw the record:\n{text}"
            ));
        }
        Ok(())
    });
}

#[test]
fn a_reviewer_settles_a_concurrent_edit_and_both_phones_take_the_chosen_value() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", VILLAGE);
    server.add_reviewer("r006", "441303006");
    let (mut a, mut b) = (Device::new("o1"), Device::new("o2"));
    a.login(&server, "o1");
    b.login(&server, "o2");
    let id = a.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", "11010519491231002X"),
            ("name", "王芳"),
        ],
    );
    a.sync();
    b.sync();
    a.clock.advance(10_000);
    b.clock.advance(20_000);
    a.edit(id, &[("phone", "13900139000")]);
    b.edit(id, &[("phone", "13700137000")]);
    a.sync();
    b.sync();
    let base = server.url.clone();
    in_browser("settle_conflict", |browser| async move {
        sign_in(&browser, &base, "r006").await?;
        let c = &browser.client;
        c.find(Locator::Css("nav a[href='/console/conflicts']"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        let page = wait_for_text(&browser, "并发修改冲突").await?;
        // Both values, masked as in lists (the full ones only on the record page's audited reveal).
        for expected in ["联系电话", "137****7000", "139****9000", "o1", "o2"] {
            if !page.contains(expected) {
                return Err(format!("the conflict page lacks `{expected}`:\n{page}"));
            }
        }
        if page.contains("13700137000") {
            return Err(format!(
                "the conflict page shows a full phone number:\n{page}"
            ));
        }
        // The officer who was earlier was right: take the value that lost.
        let form = c
            .form(Locator::Css("form[action$='/settle']"))
            .await
            .map_err(|e| e.to_string())?;
        form.submit_with(Locator::Css("button[value='lost']"))
            .await
            .map_err(|e| e.to_string())?;
        wait_for_text(&browser, "没有待处理的冲突").await?;
        Ok(())
    });
    a.sync();
    b.sync();
    for phone in [&a, &b] {
        let record = phone.store.get(id).expect("readable").expect("present");
        assert_eq!(record.fields["phone"], "13900139000");
    }
}

#[test]
fn a_reviewer_downloads_a_filtered_list_as_xlsx_and_it_reads_back() {
    use calamine::Reader;
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_reviewer("r006", "441303006");
    let mut phone = Device::new("o1");
    phone.login(&server, "o1");
    phone.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", "11010519491231002X"),
            ("name", "王芳"),
            ("phone", "13800138000"),
        ],
    );
    phone.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", "441302199001011231"),
            ("name", "陈静"),
        ],
    );
    phone.sync();
    let base = server.url.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    in_browser("xlsx_export", |browser| async move {
        sign_in(&browser, &base, "r006").await?;
        let c = &browser.client;
        c.goto(&format!("{base}/console/records?kind=person&q=王"))
            .await
            .map_err(|e| e.to_string())?;
        wait_for(&browser, "a.export").await?;
        c.find(Locator::LinkText("导出 Excel"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        let file = browser
            .downloaded("xlsx", std::time::Duration::from_secs(20))
            .await
            .ok_or("no .xlsx arrived in the download directory")?;
        let bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
        tx.send(bytes).map_err(|e| e.to_string())?;
        Ok(())
    });
    let bytes = rx.recv().expect("the downloaded workbook");
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes)).expect("an XLSX workbook");
    let sheet = book.sheet_names()[0].clone();
    let range = book.worksheet_range(&sheet).expect("the first sheet");
    let cells: Vec<String> = range.cells().map(|(_, _, v)| v.to_string()).collect();
    assert!(cells.iter().any(|c| c == "11010519491231002X"), "{cells:?}");
    assert!(cells.iter().any(|c| c.contains("王芳")), "{cells:?}");
    assert!(
        !cells.iter().any(|c| c.contains("陈静")),
        "the export follows the list's search"
    );
}
