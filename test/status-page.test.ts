/**
 * The status page (`GET /` on the admin listener): self-contained HTML, behind the
 * allow-list, and rendered for real in Debian's chromium (playwright-core, no browser
 * download) while demo backends serve traffic; its certificates table with certificates made
 * in the test (test/helpers/tls-certs.ts).
 */
import http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { BrowserContext } from 'playwright-core';
import { freePort, request, startLB, type RunningLB } from './helpers/net.js';
import { demoConfig, startDemoBackend } from '../src/tools/demo.js';
import { TestPki } from './helpers/tls-certs.js';

const CHROMIUM = '/usr/bin/chromium';
const DAY = 24 * 3600 * 1000;

/** Debian's chromium, headless, with a fresh profile in a temp directory (removed by `close`). */
async function browser(): Promise<{ context: BrowserContext; work: string; close: () => Promise<void> }> {
  const { chromium } = await import('playwright-core');
  const work = await mkdtemp(join(tmpdir(), 'sessionlb-status-page-'));
  // A fresh profile (playwright passes it as --user-data-dir); a screenshot may go next to it.
  const context = await chromium.launchPersistentContext(join(work, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1180, height: 520 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {
    context, work,
    close: async () => {
      await context.close();
      await rm(join(work, 'profile'), { recursive: true, force: true });
    },
  };
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()!().catch(() => undefined);
});

async function lb(raw: Record<string, unknown>): Promise<RunningLB> {
  const r = await startLB(raw);
  cleanup.push(() => r.stop());
  return r;
}

/** Four demo backends (they issue PHPSESSID like PHP) on free ports, and sessionlb on the demo config. */
async function demo(mutate: (config: Record<string, unknown>) => void = () => undefined): Promise<{ url: string; admin: string; ports: number[] }> {
  const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
  const servers = await Promise.all(ports.map((p, i) => startDemoBackend(`backend-${i + 1}`, p)));
  cleanup.push(async () => { for (const s of servers) { s.close(); s.closeAllConnections(); } });
  const port = await freePort();
  const adminPort = await freePort();
  const config = demoConfig(port, adminPort, ports);
  mutate(config);
  await lb(config);
  return { url: `http://127.0.0.1:${port}`, admin: `http://127.0.0.1:${adminPort}`, ports };
}

describe('status page', () => {
  it('is one self-contained HTML page on the admin listener', async () => {
    const { admin } = await demo();
    const res = await request(`${admin}/`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.body).toMatch(/^<!doctype html>/);
    // Nothing loaded from elsewhere: no external scripts, styles, fonts or images.
    expect(res.body).not.toMatch(/<script[^>]+src=/i);
    expect(res.body).not.toMatch(/<link[^>]+href=/i);
    expect(res.body).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect(res.body).not.toMatch(/@import|url\(/);
    expect(res.body).toContain('fetch("status"');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
  });

  it('is refused outside admin.allow', async () => {
    const { admin } = await demo((c) => { (c.admin as Record<string, unknown>).allow = ['192.0.2.0/24']; });
    expect((await request(`${admin}/`)).status).toBe(403);
    expect((await request(`${admin}/status`)).status).toBe(403);
  });

  it('needs no token itself (it holds no data) while /status and /metrics do', async () => {
    const { admin } = await demo((c) => { (c.admin as Record<string, unknown>).token = 'page-token-0123456789'; });
    expect((await request(`${admin}/`)).status).toBe(200);
    expect((await request(`${admin}/status`)).status).toBe(401);
    expect((await request(`${admin}/metrics`)).status).toBe(401);
    expect((await request(`${admin}/status`, { headers: { Authorization: 'Bearer page-token-0123456789' } })).status).toBe(200);
  });

  it.skipIf(!existsSync(CHROMIUM))('renders live server rows and states in chromium while the demo serves traffic', async () => {
    const { url, admin, ports } = await demo((c) => {
      const up = (c.upstreams as Record<string, { servers: Array<Record<string, unknown>> }>).backend!;
      up.servers[3]!.down = true; // backend-4 is marked down in the config
    });
    // backend-3 drained at runtime through the admin API.
    const drained = await request(`${admin}/upstreams/backend/servers/${encodeURIComponent(`127.0.0.1:${ports[2]}`)}`, {
      method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ state: 'drain' }),
    });
    expect(drained.status).toBe(200);

    // Traffic while the page is open: bounded in count and time.
    let stop = false;
    let sent = 0;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const traffic = (async () => {
      const until = Date.now() + 40_000;
      // Two anonymous clients, two that keep the PHPSESSID their first response set (sticky lookups).
      const worker = async (keepSession: boolean): Promise<void> => {
        let cookie: string | undefined;
        while (!stop && sent < 20_000 && Date.now() < until) {
          sent++;
          const res = await request(url + '/', { agent, headers: cookie === undefined ? {} : { Cookie: cookie } }).catch(() => null);
          const set = res?.headers['set-cookie']?.[0];
          if (keepSession && cookie === undefined && set !== undefined) cookie = set.split(';')[0];
          await new Promise((x) => setTimeout(x, 2));
        }
      };
      await Promise.all([worker(false), worker(false), worker(true), worker(true)]);
    })();

    const { context, work, close } = await browser();
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('requestfailed', (req) => errors.push(`request failed: ${req.url()}`));
      await page.goto(`${admin}/`);

      const rows = page.locator('section[data-upstream="backend"] tbody tr[data-server]');
      await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(4);
      const states = await rows.evaluateAll((trs) => trs.map((tr) => [tr.getAttribute('data-server'), tr.getAttribute('data-state')]));
      expect(states).toEqual([
        [`127.0.0.1:${ports[0]}`, 'up'],
        [`127.0.0.1:${ports[1]}`, 'up'],
        [`127.0.0.1:${ports[2]}`, 'drain'],
        [`127.0.0.1:${ports[3]}`, 'down'],
      ]);
      const badges = await rows.locator('.badge').allTextContents();
      expect(badges).toEqual(['up', 'up', 'drain', 'down']);

      // After a few refreshes the busiest server shows a request rate and a drawn sparkline.
      const firstRate = rows.nth(0).locator('td.rps');
      await expect.poll(async () => Number.parseFloat((await firstRate.textContent()) ?? '0'), { timeout: 15_000 }).toBeGreaterThan(0);
      // A sparkline with a few points (one per 2 s refresh).
      await expect.poll(async () => ((await rows.nth(0).locator('svg.spark polyline').getAttribute('points').catch(() => null)) ?? '').split(' ').length,
        { timeout: 20_000 }).toBeGreaterThanOrEqual(4);
      // The down server gets nothing.
      expect(Number.parseFloat((await rows.nth(3).locator('td.rps').textContent()) ?? 'x')).toBe(0);
      // Weight column: the configured 3:1:1:1.
      const weights = await rows.evaluateAll((trs) => trs.map((tr) => tr.children[2]!.textContent));
      expect(weights).toEqual(['3', '1', '1', '1']);
      // A weight set through the admin API: the one in use, and the config's beside it.
      const put = await request(`${admin}/upstreams/backend/servers/127.0.0.1:${ports[1]}`, { method: 'PUT', body: '{"weight": 5}' });
      expect(put.status).toBe(200);
      await expect.poll(async () => (await rows.nth(1).locator('td').nth(2).textContent()) ?? '', { timeout: 10_000 }).toBe('5 (config 1)');
      await expect.poll(async () => (await page.locator('#conn').textContent()) ?? '').toMatch(/^live/);
      // The demo upstream is sticky (learn): the clients that keep their cookie are looked up and found.
      await expect.poll(async () => (await page.locator('section[data-upstream="backend"] .sticky').textContent()) ?? '', { timeout: 10_000 })
        .toMatch(/^sticky hit ratio \d+(\.\d)?%$/);
      // No ssl server: no certificates table.
      expect(await page.locator('section.certificates').count()).toBe(0);
      expect(errors).toEqual([]);

      const shot = join(work, 'status-page.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect((await stat(shot)).size).toBeGreaterThan(10_000);
      process.stdout.write(`status page screenshot: ${shot}\n`);
    } finally {
      stop = true;
      await close();
      await traffic;
      agent.destroy();
    }
    expect(sent).toBeGreaterThan(0);
  });
});

describe('status page: certificates', () => {
  const pki = new TestPki();
  afterAll(() => pki.remove());

  it.skipIf(!existsSync(CHROMIUM))('renders a Certificates table in chromium, expiring and expired rows highlighted', async () => {
    const now = Date.now();
    const ok = pki.issue('shop.test', { names: ['shop.test', 'www.shop.test'] });
    const soon = pki.issue('soon.test', { notAfter: now + 5 * DAY });
    const old = pki.issue('old.test', { notBefore: now - 30 * DAY, notAfter: now - DAY });
    const port = await freePort();
    const listen = [`127.0.0.1:${port} ssl`];
    const server = (name: string, c: { cert: string; key: string }): Record<string, unknown> =>
      ({ listen, serverName: [name], ssl: { certificate: c.cert, certificateKey: c.key }, locations: [{ path: '/', proxyPass: 'http://backend' }] });
    const r = await lb({
      servers: [server('shop.test', ok), server('soon.test', soon), server('old.test', old)],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } },
    });
    const { context, close } = await browser();
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`http://127.0.0.1:${r.adminPort}/`);
      const rows = page.locator('section.certificates tbody tr[data-certificate]');
      await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(3);
      expect(await page.locator('section.certificates h2').textContent()).toBe('Certificates3 in use · 2 expiring or expired');
      const cells = await rows.evaluateAll((trs) => trs.map((tr) => [tr.getAttribute('data-state'), tr.className, ...[...tr.children].map((td) => td.textContent)]));
      const address = `127.0.0.1:${port}`;
      const shown = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
      const doc = JSON.parse((await request(`http://127.0.0.1:${r.adminPort}/status`)).body) as { certificates: Array<{ notAfter: string }> };
      const [a, b, c] = doc.certificates.map((x) => shown(x.notAfter));
      expect(cells).toEqual([
        ['ok', 'c-ok', 'shop.test', address, ok.cert, 'shop.test, www.shop.test', a, '89', 'ok'],
        ['expiring', 'c-expiring', 'soon.test', address, soon.cert, 'soon.test', b, '4', 'expiring'],
        ['expired', 'c-expired', 'old.test', address, old.cert, 'old.test', c, '-1', 'expired'],
      ]);
      // Highlighted: the expiring and expired rows have a background, the ok row none.
      const backgrounds = await rows.evaluateAll((trs) => trs.map((tr) =>
        (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(tr.children[0]).backgroundColor));
      expect(backgrounds[0]).toBe('rgba(0, 0, 0, 0)');
      expect(backgrounds[1]).toBe('rgb(254, 243, 199)');
      expect(backgrounds[2]).toBe('rgb(254, 226, 226)');
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  });
});

describe('status page browser test prerequisites', () => {
  it.runIf(!existsSync(CHROMIUM))('skips the chromium test: /usr/bin/chromium is not installed (apt-get install chromium; .ci/run does)', () => {
    expect(existsSync(CHROMIUM)).toBe(false);
  });
});
