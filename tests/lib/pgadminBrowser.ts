/**
 * pgAdmin 4 (9.x) driven in a real headless Chromium (Debian's `chromium`, through
 * playwright-core): log in, read the Object Explorer tree, connect to a server typing its
 * password, run a query in the Query Tool and read the result grid. The tree (react-aspen) has no
 * ARIA tree roles: a node is a `div.file-entry` whose label is a `span.file-name`.
 */
import { Browser, FrameLocator, Locator, Page, chromium } from "playwright-core";

/** Debian's chromium; installed by scripts/test.sh for the e2e layer. */
export const CHROMIUM = process.env.PG_CLUSTER_CHROMIUM ?? "/usr/bin/chromium";

export class PgAdminBrowser {
  private constructor(
    private readonly browser: Browser,
    readonly url: string,
  ) {}

  static async launch(url: string): Promise<PgAdminBrowser> {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    return new PgAdminBrowser(browser, url);
  }

  async close(): Promise<void> {
    await this.browser.close();
  }

  /**
   * A new page logged in as `email`; or, with a wrong password, the reason pgAdmin gave and the
   * path it stayed on.
   */
  async login(
    email: string,
    password: string,
  ): Promise<{ page: Page; refused?: string; path: string }> {
    const context = await this.browser.newContext({ viewport: { width: 1600, height: 1000 } });
    const page = await context.newPage();
    await page.goto(this.url);
    await page.getByRole("textbox", { name: "Email Address / Username" }).fill(email);
    await page.getByRole("textbox", { name: "Password" }).fill(password);
    await page.getByRole("button", { name: "Login" }).click();
    const refused = page.getByText(/Incorrect username or password|Your account is locked/);
    await this.tree(page).or(refused).first().waitFor({ timeout: 30_000 });
    const path = new URL(page.url()).pathname;
    if (await refused.first().isVisible()) {
      return { page, refused: await refused.first().innerText(), path };
    }
    return { page, path };
  }

  tree(page: Page): Locator {
    return page.getByRole("tabpanel", { name: "Object Explorer" });
  }

  /** A tree node by its exact label. */
  node(page: Page, name: string): Locator {
    return this.tree(page)
      .locator(".file-entry", { has: page.getByText(name, { exact: true }) })
      .first();
  }

  /** Makes `child` visible under `parent` (pgAdmin may have expanded it itself). */
  async reveal(page: Page, parent: string, child: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await this.node(page, child).isVisible()) return;
      const toggle = this.node(page, parent).locator(".directory-toggle");
      const open = ((await toggle.getAttribute("class")) ?? "").split(/\s+/).includes("open");
      if (!open) await toggle.click();
      await this.node(page, child)
        .waitFor({ timeout: 2000 })
        .catch(() => {});
    }
    throw new Error(`tree node "${child}" under "${parent}" did not appear`);
  }

  /** Every label the tree shows once `group` is expanded (its servers among them). */
  async labelsUnder(page: Page, group: string): Promise<string[]> {
    await this.node(page, group).waitFor({ timeout: 30_000 });
    const toggle = this.node(page, group).locator(".directory-toggle");
    if (!((await toggle.getAttribute("class")) ?? "").split(/\s+/).includes("open")) {
      await toggle.click();
    }
    // Its first child shows once the group's children are loaded.
    await this.tree(page).locator(".file-entry").nth(2).waitFor({ timeout: 15_000 });
    return (await this.tree(page).locator(".file-entry .file-name").allInnerTexts()).map((t) =>
      t.trim(),
    );
  }

  /** Connects to `server` (expanding it asks for its password), then waits for its databases. */
  async connect(page: Page, server: string, password: string): Promise<void> {
    await this.node(page, server).locator(".directory-toggle").click();
    // The dialog is rendered while the rest of the page is aria-hidden: role queries include hidden.
    const dialog = page.getByRole("dialog", { name: "Connect to Server", includeHidden: true });
    await dialog.waitFor({ timeout: 15_000 });
    await dialog.locator("input[type=password]").fill(password);
    await dialog.getByRole("button", { name: "OK", includeHidden: true }).click();
    await dialog.waitFor({ state: "detached", timeout: 30_000 });
    await this.node(page, "Databases").waitFor({ timeout: 30_000 });
  }

  /**
   * Opens the Query Tool on `database` of the connected server, runs `sql` (Execute script)
   * and returns the column names and the rows as the result grid shows them.
   */
  async query(
    page: Page,
    database: string,
    sql: string,
  ): Promise<{ columns: string[]; rows: string[][] }> {
    await this.reveal(page, "Databases", database);
    // Selecting the database connects it (the maintenance database already is); the toolbar's
    // Query Tool button is enabled once it is, and click() waits for that.
    await this.node(page, database).locator(".file-name").click();
    await page.getByRole("button", { name: "Query Tool", exact: true }).click({ timeout: 30_000 });
    // The tab is labelled "<db>/<user>@<server>"; its id names the iframe holding the tool.
    const tab = page.locator("[role=tab].dock-tab-btn[aria-selected=true]", {
      hasText: `${database}/`,
    });
    await tab.waitFor({ timeout: 30_000 });
    const panel = ((await tab.getAttribute("id")) ?? "").replace(/^rc-tabs-\d+-tab-/, "");
    const tool: FrameLocator = page.locator(`iframe[id="${panel}"]`).contentFrame();
    const editor = tool.getByRole("tabpanel", { name: "Query", exact: true }).getByRole("textbox");
    await editor.waitFor({ timeout: 30_000 });
    await tool.getByText("No data output").waitFor({ timeout: 30_000 });
    await editor.fill(sql);
    await tool.getByRole("button", { name: "Execute script" }).click();
    await tool.getByText(/Total rows: \d+/).waitFor({ timeout: 30_000 });
    const grid = tool.getByRole("grid");
    const columns = (await grid.getByRole("columnheader").allInnerTexts())
      .map((s) => s.trim().split(/\s+/)[0])
      .filter(Boolean);
    const dataRows = grid.getByRole("row").filter({ has: tool.getByRole("gridcell") });
    const rows: string[][] = [];
    for (let i = 0; i < (await dataRows.count()); i++) {
      const cells = await dataRows.nth(i).getByRole("gridcell").allInnerTexts();
      rows.push(cells.slice(1).map((s) => s.trim())); // the first cell is the row number
    }
    return { columns, rows };
  }
}
