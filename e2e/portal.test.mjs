// Browser tests against a running CityTrust demo (BASE_URL). Run by scripts/test.
// Signs in as `owner`, creates a dataset through the form, finds it by search,
// and checks every page visited with axe-core (WCAG 2.1 A/AA): no violations.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const BASE = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const PASSWORD = process.env.DEMO_PASSWORD || 'demo-password';

let browser;

before(async () => {
  // Playwright gives every launch a fresh temporary profile (it refuses --user-data-dir here).
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** Run axe-core on the page (the CSP forbids inline script, so bypass it for the test). */
async function assertAccessible(page, label) {
  await page.addScriptTag({ content: AXE_SOURCE });
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }));
  const problems = result.violations.map(v => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map(n => n.target.join(' ')).join('\n    ')}`);
  assert.deepEqual(problems, [], `${label}: accessibility violations`);
}

async function newPage(viewport) {
  const context = await browser.newContext({ bypassCSP: true, viewport });
  return context.newPage();
}

async function signIn(page, username) {
  await page.goto(`${BASE}/signin`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE}/`);
}

test('public pages are accessible and readable without signing in', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  for (const path of ['/', '/datasets', '/datasets?theme=mobility', '/datasets/citibike-jersey-city-trips', '/datasets/household-electricity', '/datasets/barcelona-districts', '/signin', '/log/analytics', '/nowhere']) {
    await page.goto(`${BASE}${path}`);
    await assertAccessible(page, path);
  }
  // GeoJSON content gets a map: the ten districts of Barcelona.
  await page.goto(`${BASE}/datasets/barcelona-districts`);
  assert.ok(await page.getByRole('img', { name: /Map of/ }).isVisible());
  assert.ok(await page.locator('svg.map .map-areas path').count() >= 10);
  // The Citi Bike trips carry their re-identification risk report, public like the quality shares.
  await page.goto(`${BASE}/datasets/citibike-jersey-city-trips`);
  const risk = page.getByRole('region', { name: /Re-identification risk/ });
  assert.ok(await risk.isVisible());
  assert.match(await risk.locator('.risk-summary').innerText(), /records .* are unique on these columns/);
  const combination = risk.getByRole('row', { name: /^birth year \+ gender \+ start station id\b/ });
  assert.equal(await combination.locator('td').nth(1).innerText(), '522');
  await page.context().close();
});

test('the owner signs in, creates a dataset through the form and finds it by search', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await signIn(page, 'owner');
  await assertAccessible(page, 'home, signed in');
  await page.getByRole('link', { name: 'New dataset' }).click();
  await page.waitForURL(`${BASE}/datasets/new`);
  await assertAccessible(page, 'new dataset form');

  const title = `Street tree inventory ${Date.now()}`;
  await page.getByLabel(/^Title/).fill(title);
  await page.getByLabel(/^Description/).fill('Every street tree: species, planting year and location.');
  await page.getByLabel('Keywords').fill('trees, canopy, greening');
  await page.getByRole('checkbox', { name: 'Environment' }).check();
  await page.getByRole('radio', { name: 'Shared — public access' }).check();
  await page.getByLabel('Format').fill('CSV');
  await page.getByLabel('Licence identifier').fill('CC-BY-4.0');
  await page.getByLabel('Licence title').fill('Creative Commons Attribution 4.0');
  await page.getByRole('button', { name: 'Create dataset' }).click();
  await page.waitForURL(/\/datasets\/street-tree-inventory-\d+$/);
  await assert.doesNotReject(page.getByRole('heading', { level: 1, name: title }).waitFor());
  assert.ok(await page.getByText('Shared — public access').first().isVisible());
  await assertAccessible(page, 'the new dataset page');

  await page.goto(`${BASE}/datasets`);
  await page.getByLabel('Search datasets').fill('street tree inventory');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL(/\/datasets\?q=street/);
  const link = page.getByRole('link', { name: title });
  await link.waitFor();
  await assertAccessible(page, 'search results');
  await link.click();
  await page.waitForURL(/\/datasets\/street-tree-inventory-\d+$/);

  // A refused form names the field and is accessible too.
  await page.goto(`${BASE}/datasets/new`);
  await page.getByLabel(/^Title/).fill('No description');
  await page.getByLabel(/^Description/).fill(' ');
  await page.getByRole('button', { name: 'Create dataset' }).click();
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /Description/);
  await assertAccessible(page, 'form with errors');
  await page.context().close();
});

test('the owner uploads a CSV through the dataset page and sees its quality chart and map', async () => {
  // A fresh dataset of the owner's organisation, made through the API.
  const token = (await (await fetch(`${BASE}/api/v1/auth/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'owner', password: PASSWORD }),
  })).json()).token;
  const created = await fetch(`${BASE}/api/v1/datasets`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({
      title: `Bike parking ${Date.now()}`, description: 'Bike parking places counted in the street.',
      owner_organization_id: 'city-data-office', spectrum: 'open', update_frequency: 'monthly',
    }),
  });
  assert.equal(created.status, 201);
  const { id } = await created.json();

  const page = await newPage({ width: 1280, height: 900 });
  await signIn(page, 'owner');
  await page.goto(`${BASE}/datasets/${id}`);
  await assertAccessible(page, 'dataset page before content, with the upload form');
  const form = page.locator('#upload-form');
  assert.ok(await form.isVisible(), 'the script reveals the form');

  // A bad file first: refused, each bad row named, nothing published.
  await page.getByLabel('File', { exact: true }).setInputFiles({
    name: 'parking.csv', mimeType: 'text/csv',
    buffer: Buffer.from('place,spaces,longitude,latitude\nRambla,12,2.1734,41.3818\nSants,2.1403,41.3791\n'),
  });
  await page.getByRole('button', { name: 'Upload' }).click();
  await page.locator('#upload-errors .error-box').waitFor();
  assert.match(await page.locator('#upload-errors').innerText(), /line 3: wrong number of fields/);
  await assertAccessible(page, 'upload refused');

  // Then a good one: progress, then the new version with its chart and map.
  let csv = 'place,spaces,longitude,latitude\n';
  for (let i = 0; i < 400; i++) csv += `Place ${i},${i % 7 === 0 ? '' : 5 + (i % 30)},${(2.10 + (i % 20) * 0.005).toFixed(4)},${(41.37 + Math.floor(i / 20) * 0.003).toFixed(4)}\n`;
  await page.getByLabel('File', { exact: true }).setInputFiles({ name: 'parking.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.getByRole('button', { name: 'Upload' }).click();
  await page.waitForURL(new RegExp(`/datasets/${id}\\?published=1`));
  await page.getByRole('status').filter({ hasText: 'Version 1 is published.' }).waitFor();
  const chart = page.getByRole('img', { name: /Completeness per column/ });
  assert.ok(await chart.isVisible(), 'the quality chart is drawn');
  assert.equal(await chart.locator('rect.bar-fill').count(), 4, 'one bar per column');
  assert.ok(await page.getByRole('img', { name: /Map of/ }).isVisible(), 'the map is drawn');
  assert.equal(await page.locator('svg.map circle').count(), 400);
  assert.match(await page.getByRole('table', { name: /Columns of version 1/ }).innerText(), /spaces\s+integer\s+85\.5%\s+58/);
  await assertAccessible(page, 'dataset page with content');
  await page.context().close();
});

test('the portal works by keyboard alone', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${BASE}/`);
  await page.keyboard.press('Tab');
  const skip = await page.evaluate(() => document.activeElement?.textContent?.trim());
  assert.equal(skip, 'Skip to main content');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement?.closest('main') !== null);
  assert.ok(focused, 'after the skip link, focus moves into the main content');
  await page.goto(`${BASE}/signin`);
  await page.getByLabel('Username').focus();
  await page.keyboard.type('owner');
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await page.waitForURL(`${BASE}/`);
  await page.context().close();
});

test('a resident cannot see the admin page; the administrator can', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await signIn(page, 'resident');
  assert.equal(await page.getByRole('link', { name: 'Administration' }).count(), 0);
  const res = await page.goto(`${BASE}/admin`);
  assert.equal(res.status(), 403);
  await page.context().close();

  const admin = await newPage({ width: 1280, height: 900 });
  await signIn(admin, 'admin');
  await admin.getByRole('link', { name: 'Administration' }).click();
  await admin.waitForURL(`${BASE}/admin`);
  await assertAccessible(admin, 'admin page');
  await admin.context().close();
});

test('a resident signs in through the city\'s OpenID Connect provider and comes back to the same account', async () => {
  const OIDC = process.env.OIDC_URL;
  assert.ok(OIDC, 'scripts/test starts an OpenID Connect provider and sets OIDC_URL');
  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${BASE}/signin`);
  await assertAccessible(page, 'sign-in page with an identity service');
  for (let round = 0; round < 2; round++) {
    await page.getByRole('link', { name: 'Sign in with City ID' }).click();
    if (round === 0) {
      // The provider's own pages: any login name and password, then consent.
      await page.waitForURL(u => u.href.startsWith(OIDC));
      await page.locator('input[name=login]').fill('marta.puig');
      await page.locator('input[name=password]').fill('any password at all');
      await page.getByRole('button', { name: 'Sign-in' }).click();
      await page.getByRole('button', { name: 'Continue' }).click();
    }
    // Back at the trust, signed in under the name the provider gave.
    await page.waitForURL(`${BASE}/`);
    assert.match(await page.locator('.who').innerText(), /Marta Puig/);
    // The provider vouched for her household: her records are linked, once.
    await page.goto(`${BASE}/me`);
    assert.match(await page.locator('main').innerText(), /H0012[\s\S]*your sign-in service/);
    assert.equal(await page.getByText('Your records carry the key').count(), 1);
    await page.getByRole('button', { name: /Sign out/ }).click();
    await page.waitForURL(`${BASE}/`);
    await page.goto(`${BASE}/signin`);
  }
  // An answer replayed to the trust signs nobody in.
  const res = await page.goto(`${BASE}/signin/oidc/city-id/callback?code=replayed&state=${'0'.repeat(64)}`);
  assert.equal(res.status(), 403);
  await page.context().close();
});

test('any log entry\'s proof is checked in the browser from public data, and a forged proof is caught', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${BASE}/log`);
  await assertAccessible(page, 'the transparency log');
  await page.getByRole('region', { name: 'Log entries table' }).getByRole('link').nth(3).click();
  await page.waitForURL(/\/log\/\d+$/);
  assert.match(await proofOutcome(page), /^Verified in your browser: entry \d+ is in the log\./);
  await assertAccessible(page, 'a log entry');
  // A log key's base64 may contain '+', the separator of a verifier key's fields:
  // the same checkpoint, signed by a key that has one, still verifies.
  const key = keyWithPlus();
  const origin = (await (await fetch(`${BASE}/ledger/checkpoint`)).text()).split('\n')[0];
  await page.route('**/ledger/key', route => route.fulfill({ contentType: 'text/plain', body: `${key.verifier(origin)}\n` }));
  await page.route('**/api/v1/ledger/entries/*', async route => {
    const res = await route.fetch();
    const body = await res.json();
    const text = body.checkpoint.note.slice(0, body.checkpoint.note.indexOf('\n\n') + 1);
    body.checkpoint.note = key.sign(origin, text);
    await route.fulfill({ response: res, json: body });
  });
  await page.reload();
  assert.match(await proofOutcome(page), /^Verified in your browser: .* signed by /);
  await page.unroute('**/ledger/key');
  await page.unroute('**/api/v1/ledger/entries/*');
  // The same page, fed a proof with one hash changed, must not say it verifies.
  await page.route('**/api/v1/ledger/entries/*', async route => {
    const res = await route.fetch();
    const body = await res.json();
    assert.ok(body.inclusion_proof.length > 0);
    body.inclusion_proof[0] = Buffer.alloc(32).toString('base64');
    await route.fulfill({ response: res, json: body });
  });
  await page.reload();
  assert.equal(await proofOutcome(page), 'Does not verify: the inclusion proof does not lead to the signed root.');
  await page.context().close();
});

test('the in-browser check lists the witnesses whose cosignatures verify, and only those', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${BASE}/log`);
  await page.getByRole('region', { name: 'Log entries table' }).getByRole('link').nth(2).click();
  await page.waitForURL(/\/log\/\d+$/);
  // Two witnesses, cosigning per C2SP tlog-cosignature, written here from the specification.
  const witness = name => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const raw = Buffer.concat([Buffer.of(4), Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url')]);
    const id = createHash('sha256').update(Buffer.concat([Buffer.from(`${name}\n`), raw])).digest().subarray(0, 4);
    return {
      line: label => `witness ${label} ${name}+${id.toString('hex')}+${raw.toString('base64')}\n`,
      cosign: (text, time, tamper = false) => {
        const ts = Buffer.alloc(8);
        ts.writeBigUInt64BE(BigInt(time));
        const msg = Buffer.from(`cosignature/v1\ntime ${time}\n${text}${tamper ? 'x' : ''}`);
        return `\u2014 ${name} ${Buffer.concat([id, ts, sign(null, msg, privateKey)]).toString('base64')}\n`;
      },
    };
  };
  const [w1, w2] = [witness('w1.example/witness'), witness('w2.example/witness')];
  await page.route('**/ledger/witnesses', route => route.fulfill({ contentType: 'text/plain', body: w1.line('W1') + w2.line('W2') }));
  await page.route('**/api/v1/ledger/entries/*', async route => {
    const res = await route.fetch();
    const body = await res.json();
    const note = body.checkpoint.note;
    const text = note.slice(0, note.indexOf('\n\n') + 1);
    // W1's cosignature is good; W2's is over other bytes.
    body.checkpoint.note = note + w1.cosign(text, 1780000000) + w2.cosign(text, 1780000000, true);
    await route.fulfill({ response: res, json: body });
  });
  await page.reload();
  assert.match(await proofOutcome(page), /Cosigned by the witnesses W1 \(each cosignature checked\)\.$/);
  await page.unroute('**/api/v1/ledger/entries/*');
  // No cosignature at all: said plainly.
  await page.reload();
  assert.match(await proofOutcome(page), /None of the log's witnesses has cosigned this checkpoint yet\.$/);
  await page.goto(`${BASE}/witnessing`);
  await assertAccessible(page, 'what the trust witnesses');
  await page.context().close();
});

/** An Ed25519 signed-note key whose base64 contains '+'; C2SP key id = SHA-256(name \\n 0x01 key)[:4]. */
function keyWithPlus() {
  for (;;) {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const raw = Buffer.concat([Buffer.of(1), Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url')]);
    if (!raw.toString('base64').includes('+')) continue;
    const id = name => createHash('sha256').update(Buffer.concat([Buffer.from(`${name}\n`), raw])).digest().subarray(0, 4);
    return {
      verifier: name => `${name}+${id(name).toString('hex')}+${raw.toString('base64')}`,
      sign: (name, text) => {
        const sig = Buffer.concat([id(name), sign(null, Buffer.from(text), privateKey)]);
        return `${text}\n\u2014 ${name} ${sig.toString('base64')}\n`;
      },
    };
  }
}

/** What the log entry page's in-browser check concluded, once it has. */
async function proofOutcome(page) {
  const status = page.getByRole('status');
  await page.waitForFunction(() => !document.getElementById('proof-status').classList.contains('proof-pending'));
  return (await status.innerText()).trim();
}

test('pages are readable on a phone', async () => {
  const page = await newPage({ width: 375, height: 740 });
  for (const path of ['/', '/datasets', '/datasets/seattle-building-energy', '/datasets/barcelona-districts']) {
    await page.goto(`${BASE}${path}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${path} scrolls sideways on a phone by ${overflow}px`);
    await assertAccessible(page, `${path} on a phone`);
  }
  await page.context().close();
});

/** A bearer token for a demo account. */
async function tokenFor(username) {
  const res = await fetch(`${BASE}/api/v1/auth/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).token;
}

function day(offset) {
  const d = new Date(Date.now() + offset * 86400000);
  return d.toISOString().slice(0, 10);
}

test('the analyst asks for building energy, three trustees vote, and the agreement governs every read', async () => {
  const token = await tokenFor('analyst');
  const read = (id, purpose) => fetch(`${BASE}/api/v1/datasets/${id}/data?format=csv&purpose=${purpose}`, { headers: { authorization: `Bearer ${token}` } });
  // Before: refused, and the refusal carries nothing of the data.
  let res = await read('seattle-building-energy', 'research');
  assert.equal(res.status, 403);
  assert.equal((await res.json()).code, 'refused');

  // The request, through the form.
  const page = await newPage({ width: 1280, height: 900 });
  await signIn(page, 'analyst');
  await page.goto(`${BASE}/datasets/seattle-building-energy`);
  await page.getByRole('link', { name: 'Ask for access' }).click();
  await page.waitForURL(/\/requests\/new\?dataset=seattle-building-energy/);
  await assertAccessible(page, 'the request form');
  assert.ok(await page.getByRole('checkbox', { name: /Building energy|Seattle/ }).first().isChecked());
  await page.getByLabel('Purpose', { exact: true }).selectOption('research');
  await page.getByLabel('Level of access').selectOption('identified');
  await page.getByLabel(/^From/).fill(day(0));
  await page.getByLabel(/^Until/).fill(day(30));
  await page.getByLabel('The benefit, and to whom').fill('A public list of the buildings to retrofit first.');
  const answers = {
    'Why is sharing': 'To rank buildings by energy intensity; without the figures we would guess.',
    'Who benefits': 'Tenants and the city; the risk is exposing owners\u2019 commercial figures.',
    'Why is this much data': 'Only the annual benchmarking totals, for one month of analysis.',
    'Could the purpose be met': 'It is about buildings, not people; aggregates would hide the ranking.',
    'Which law': 'The city\u2019s building energy benchmarking ordinance.',
  };
  const systematic = page.getByRole('group', { name: 'Questions for systematic sharing' });
  for (const [start, text] of Object.entries(answers)) {
    await systematic.getByLabel(new RegExp(`^${start}`)).fill(text);
  }
  await page.getByRole('button', { name: 'Send the request' }).click();
  await page.waitForURL(/\/requests\/req-[0-9a-f]+$/);
  const requestUrl = page.url();
  assert.ok(await page.getByText('Under review').first().isVisible());
  await assertAccessible(page, 'the request page');
  await page.context().close();

  // The three trustees vote on its page.
  for (const trustee of ['trustee1', 'trustee2', 'trustee3']) {
    const t = await newPage({ width: 1280, height: 900 });
    await signIn(t, trustee);
    await t.getByRole('link', { name: 'Access requests', exact: true }).click();
    await t.waitForURL(`${BASE}/requests`);
    await assertAccessible(t, `the trustees' queue (${trustee})`);
    await t.goto(requestUrl);
    await t.getByRole('radio', { name: 'Approve' }).check();
    await t.getByLabel(/^Reason/).fill('Clear public benefit; building totals only.');
    await t.getByRole('button', { name: 'Record my vote' }).click();
    await t.getByRole('status').filter({ hasText: 'Your vote is recorded.' }).waitFor();
    await t.context().close();
  }

  // The public register shows the agreement; its page lists the terms.
  const pub = await newPage({ width: 1280, height: 900 });
  await pub.goto(`${BASE}/register`);
  await assertAccessible(pub, 'the public register');
  const link = pub.getByRole('link', { name: /^dsa-/ }).first();
  const agreementId = (await link.innerText()).trim();
  await link.click();
  await pub.waitForURL(`${BASE}/agreements/${agreementId}`);
  assert.match(await pub.locator('main').innerText(), /seattle-building-energy[\s\S]*organization:city-university[\s\S]*research/);
  await assertAccessible(pub, 'the agreement page');
  await pub.context().close();

  // Reads: for research, yes; for a commercial purpose, or of another shared dataset, no.
  res = await read('seattle-building-energy', 'research');
  assert.equal(res.status, 200);
  assert.ok((await res.text()).split('\n').length > 100);
  for (const [id, purpose] of [['seattle-building-energy', 'commercial'], ['barcelona-deaths', 'research']]) {
    res = await read(id, purpose);
    assert.equal(res.status, 403, `${id} for ${purpose}`);
    assert.equal((await res.json()).code, 'refused');
  }

  // The same from the portal: download for research; for a commercial purpose the page says no.
  const a = await newPage({ width: 1280, height: 900 });
  await signIn(a, 'analyst');
  await a.goto(`${BASE}/datasets/seattle-building-energy`);
  await assertAccessible(a, 'a shared dataset with the download form');
  await a.getByLabel('What the data will be used for').selectOption('research');
  const [download] = await Promise.all([
    a.waitForEvent('download'),
    a.getByRole('button', { name: 'Download', exact: true }).click(),
  ]);
  const text = readFileSync(await download.path(), 'utf8');
  assert.ok(text.split('\n').length > 100, 'the whole dataset came down');
  // A table of counts by neighbourhood and building type: only the cells
  // shown are listed (nothing tells a small cell from an empty one).
  await a.goto(`${BASE}/datasets/seattle-building-energy`);
  await a.getByLabel('What the table will be used for').selectOption('research');
  await a.getByLabel('Count by').selectOption('Neighborhood');
  await a.getByLabel('and by (optional)').selectOption('BuildingType');
  const [tableDownload] = await Promise.all([
    a.waitForEvent('download'),
    a.getByRole('button', { name: 'Make the table' }).click(),
  ]);
  const table = readFileSync(await tableDownload.path(), 'utf8');
  assert.match(table, /^Neighborhood,BuildingType,count\n/);
  assert.doesNotMatch(table, /suppressed/);
  const lines = table.trim().split('\n').slice(1);
  assert.ok(lines.length > 5, table);
  for (const line of lines) {
    const count = line.split(',').at(-1);
    assert.ok(Number(count) >= 10, `a small count is shown: ${line}`);
  }
  await a.goto(`${BASE}/datasets/seattle-building-energy`);
  await a.getByLabel('What the data will be used for').selectOption('commercial');
  await a.getByRole('button', { name: 'Download', exact: true }).click();
  await a.getByRole('heading', { name: 'Not allowed' }).waitFor();
  assert.match(await a.locator('main').innerText(), /Refused/);
  await a.context().close();

  // The agreement's page links each read under it to its signed log entry,
  // whose proof the reader's browser checks; the analytics count the reads.
  const reg = await newPage({ width: 1280, height: 900 });
  const entries = reg.getByRole('region', { name: 'Log entries of this agreement' });
  for (let tries = 0; ; tries++) {
    await reg.goto(`${BASE}/agreements/${agreementId}`);
    if (await entries.getByRole('row', { name: /content\.read/ }).count() >= 2) break;
    assert.ok(tries < 20, 'the reads under the agreement never appeared in its log entries');
    await reg.waitForTimeout(500);
  }
  await assertAccessible(reg, 'the agreement page with its log entries');
  await entries.getByRole('row', { name: /content\.read/ }).first().getByRole('link').click();
  await reg.waitForURL(/\/log\/\d+$/);
  assert.match(await proofOutcome(reg), /^Verified in your browser/);
  assert.match(await reg.locator('main').innerText(), /content\.read[\s\S]*research/);
  await reg.goto(`${BASE}/log/analytics`);
  const byDataset = reg.getByRole('region', { name: 'Uses by dataset table' });
  assert.match(await byDataset.getByRole('row', { name: /Building Energy/i }).innerText(), /\d/);
  await assertAccessible(reg, 'the analytics with uses');
  await reg.context().close();
});

test('the resident sees their household, who used it, withdraws and gives consent, and checks their log entries', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await signIn(page, 'resident');
  await page.getByRole('link', { name: 'My data', exact: true }).click();
  await page.waitForURL(`${BASE}/me`);
  await assertAccessible(page, 'the resident dashboard');
  const main = page.locator('main');
  // The demo linked the resident to household H0007 and recorded their consent to research by City University.
  assert.match(await main.innerText(), /H0007/);
  const research = page.getByRole('region', { name: /Research: used only with your consent/ });
  assert.match(await research.innerText(), /Researchers at organisations you choose/);
  assert.match(await research.innerText(), /You consented \(for City University/);
  // Who used my data: the analyst's read under the agreement, and the owner's own.
  const who = page.getByRole('region', { name: 'Who used my data table' });
  assert.match(await who.innerText(), /City University[\s\S]*Research[\s\S]*you consented/);

  // Withdraw: the next read under the agreement has none of the household's rows.
  await research.getByRole('button', { name: 'Withdraw this consent' }).click();
  await page.waitForURL(`${BASE}/me?done=withdraw`);
  assert.match(await page.getByRole('status').innerText(), /From the very next read/);
  const token = await tokenFor('analyst');
  const read = await fetch(`${BASE}/api/v1/datasets/household-electricity/data?format=csv&purpose=research`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(read.status, 200);
  const csv = await read.text();
  assert.ok(!csv.includes('H0007'), 'a withdrawn household is left out of the next read');
  // And given again, as easily, to the same recipient.
  const again = page.getByRole('region', { name: /Research: used only with your consent/ });
  await again.getByLabel('Who may use them').selectOption({ label: 'City University (demo)' });
  await again.getByRole('button', { name: /Give consent for Research/ }).click();
  await page.waitForURL(`${BASE}/me?done=consent`);
  assert.match(await page.getByRole('region', { name: /Research: used only with your consent/ }).innerText(), /You consented \(for City University/);
  await assertAccessible(page, 'the dashboard after a change');

  // The entries about the resident link to the log, where the browser checks each proof.
  const entries = page.getByRole('region', { name: 'My log entries table' });
  for (let tries = 0; await entries.count() === 0; tries++) {
    assert.ok(tries < 20, 'no log entries about the resident appeared');
    await page.waitForTimeout(500);
    await page.reload();
  }
  assert.match(await entries.innerText(), /Consent given/);
  await entries.getByRole('link').first().click();
  await page.waitForURL(/\/log\/\d+$/);
  assert.match(await proofOutcome(page), /^Verified in your browser/);
  await page.context().close();
});

test('a trustee registers a breach and the resident it reached finds the notice on their dashboard', async () => {
  const t = await newPage({ width: 1280, height: 900 });
  await signIn(t, 'trustee1');
  await t.getByRole('link', { name: 'Breaches', exact: true }).click();
  await t.waitForURL(`${BASE}/breaches`);
  await assertAccessible(t, 'the breach register');
  // A form with a missing field says which, and keeps what was typed.
  await t.getByLabel('Title').fill('Research extract sent to the wrong address');
  await t.getByRole('button', { name: 'Register the breach and notify' }).click();
  assert.match(await t.getByRole('alert').innerText(), /not registered/);
  assert.equal(await t.getByLabel('Title').inputValue(), 'Research extract sent to the wrong address');
  await assertAccessible(t, 'the breach form with errors');
  await t.getByLabel('What happened').fill('An extract of the household readings was e-mailed to the wrong university address.');
  await t.getByLabel('Dataset', { exact: true }).selectOption('household-electricity');
  await t.getByLabel('What each person is told').fill('A copy of your household readings was sent to the wrong address at the university. It has been deleted. You do not need to do anything.');
  await t.getByRole('button', { name: 'Register the breach and notify' }).click();
  await t.waitForURL(`${BASE}/breaches?done=breach`);
  const row = t.getByRole('region', { name: 'Breaches table' }).getByRole('row', { name: /wrong address/ });
  assert.match(await row.innerText(), /not yet told/);
  await assertAccessible(t, 'the breach register with a breach');
  await t.context().close();

  const r = await newPage({ width: 1280, height: 900 });
  await signIn(r, 'resident');
  await r.goto(`${BASE}/me#messages`);
  const messages = r.getByRole('region', { name: 'Messages from the trust' });
  assert.match(await messages.innerText(), /sent to the wrong address[\s\S]*It has been deleted/);
  await assertAccessible(r, 'the dashboard with a breach notice');
  await r.context().close();
});

test('a resident asks for data, two others support it, the owner plans and publishes it, and the supporters are told', async () => {
  const title = `Bus punctuality by line ${Date.now()}`;
  // Anyone can read the requests; asking needs an account.
  const anon = await newPage({ width: 1280, height: 900 });
  await anon.goto(`${BASE}/data-requests`);
  await assertAccessible(anon, 'the data requests');
  await anon.goto(`${BASE}/roadmap`);
  assert.match(await anon.getByRole('region', { name: 'Planned data table' }).innerText(), /Cycling accident hot spots/);
  await assertAccessible(anon, 'the roadmap');
  await anon.context().close();

  const r = await newPage({ width: 1280, height: 900 });
  await signIn(r, 'resident');
  await r.getByRole('link', { name: 'Data requests', exact: true }).click();
  await r.getByRole('link', { name: 'Ask for data' }).click();
  await r.waitForURL(`${BASE}/data-requests/new`);
  await assertAccessible(r, 'the data request form');
  await r.getByLabel('What data, in a line').fill(title);
  await r.getByLabel('What exactly: coverage, detail, period').fill('Scheduled and actual arrival per stop and line, daily.');
  await r.getByRole('button', { name: 'Send the request' }).click();
  // Missing parts are named and what was typed is kept.
  assert.match(await r.getByRole('alert').innerText(), /not sent/);
  assert.equal(await r.getByLabel('What data, in a line').inputValue(), title);
  await assertAccessible(r, 'the data request form with errors');
  await r.getByLabel('Why it is needed').fill('Buses on some lines are late every morning and nobody can show it.');
  await r.getByLabel('What you would do with it').fill('A monthly league table of lines, for the transport committee.');
  await r.getByLabel('How residents would benefit').fill('Reliable buses where people depend on them.');
  await r.getByLabel('Who you think holds it (optional)').selectOption('city-data-office');
  await r.getByRole('button', { name: 'Send the request' }).click();
  await r.waitForURL(/\/data-requests\/dr-[0-9a-f]+\?done=asked$/);
  const requestUrl = r.url().split('?')[0];
  assert.match(await r.getByRole('status').innerText(), /public now/);
  await assertAccessible(r, 'a data request, asked');
  await r.context().close();

  for (const supporter of ['analyst', 'trustee2']) {
    const s = await newPage({ width: 1280, height: 900 });
    await signIn(s, supporter);
    await s.goto(`${BASE}/data-requests?q=${encodeURIComponent(title)}`);
    await s.getByRole('link', { name: title }).click();
    await s.getByRole('button', { name: 'Support this request' }).click();
    await s.waitForURL(/done=supported$/);
    assert.ok(await s.getByRole('button', { name: 'Withdraw my support' }).isVisible());
    await s.context().close();
  }

  const o = await newPage({ width: 1280, height: 900 });
  await signIn(o, 'owner');
  await o.goto(`${BASE}/data-requests`);
  await o.getByRole('region', { name: 'Data requests table' }).getByRole('link', { name: title }).click();
  assert.match(await o.locator('main').innerText(), /2 supporters/);
  await assertAccessible(o, 'a data request with the answer form');
  await o.getByRole('radio', { name: 'Planned' }).check();
  await o.getByLabel('For a plan: published by (YYYY-MM-DD)').fill(day(30));
  await o.getByRole('button', { name: 'Record the answer' }).click();
  await o.waitForURL(/done=answered$/);
  await o.goto(`${BASE}/roadmap`);
  assert.match(await o.getByRole('region', { name: 'Planned data table' }).innerText(), new RegExp(title));
  await o.goto(requestUrl);
  await o.getByRole('radio', { name: 'Published' }).check();
  await o.getByLabel('For published or exists: the dataset').selectOption('barcelona-bus-stops');
  await o.getByLabel('A note (for a decline, the reason)').fill('Published as part of the bus network data.');
  await o.getByRole('button', { name: 'Record the answer' }).click();
  await o.waitForURL(/done=answered$/);
  assert.match(await o.locator('main').innerText(), /Published/);
  await o.context().close();

  for (const told of ['resident', 'analyst', 'trustee2']) {
    const p = await newPage({ width: 1280, height: 900 });
    await signIn(p, told);
    await p.goto(`${BASE}/me#messages`);
    const messages = p.getByRole('region', { name: 'Messages from the trust' });
    assert.match(await messages.innerText(), new RegExp(`Data request answered: ${title}[\\s\\S]*barcelona-bus-stops`), told);
    await p.context().close();
  }
});

test('a trustee opens a consultation, residents answer, it closes, and the results show only counts at the threshold', async () => {
  const title = `Opening the parking-occupancy data ${Date.now()}`;
  const t = await newPage({ width: 1280, height: 900 });
  await signIn(t, 'trustee1');
  await t.getByRole('link', { name: 'Consultations', exact: true }).click();
  await t.waitForURL(`${BASE}/consultations`);
  await assertAccessible(t, 'the consultations');
  // The demo's consultation has run: its results are public and cited by the charter.
  await t.getByRole('link', { name: 'Sharing household smart-meter readings for research' }).click();
  assert.match(await t.getByRole('region', { name: /^Results: Should household readings/ }).innerText(), /Yes, with my consent\s+10[\s\S]*not shown/);
  assert.match(await t.locator('main').innerText(), /Charter version 2/);
  await assertAccessible(t, 'a closed consultation with its results');
  await t.goto(`${BASE}/consultations`);
  await t.getByLabel('Title').fill(title);
  await t.getByLabel('The proposal, in plain words').fill('Should the car parks\' occupancy counts be open data?');
  await t.getByLabel('Opens on').fill(day(0));
  await t.getByLabel('Closes after').fill(day(14));
  await t.locator('#cn-q1-text').fill('Should the counts be open?');
  await t.locator('#cn-q1-choices').fill('Yes\nNo\nNot sure');
  await t.getByRole('button', { name: 'Open the consultation' }).click();
  await t.waitForURL(/\/consultations\/cn-[0-9a-f]+\?done=opened$/);
  const url = t.url().split('?')[0];
  const id = url.split('/').pop();
  await assertAccessible(t, 'an open consultation, as a trustee');

  // The resident answers in the browser; ten neighbours through the API.
  const r = await newPage({ width: 1280, height: 900 });
  await signIn(r, 'resident');
  await r.goto(url);
  await r.getByRole('radio', { name: 'Yes' }).check();
  await r.getByRole('button', { name: 'Send my answer' }).click();
  await r.waitForURL(/done=answered$/);
  assert.ok(await r.getByRole('button', { name: 'Change my answer' }).isVisible());
  await assertAccessible(r, 'a consultation answered');
  await r.context().close();
  for (let i = 1; i <= 12; i++) {
    const token = await tokenFor(`neighbour${String(i).padStart(2, '0')}`);
    const res = await fetch(`${BASE}/api/v1/consultations/${id}/response`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ answers: [{ question: 'q1', choice: i <= 9 ? 'Yes' : i === 10 ? 'No' : 'Not sure' }] }),
    });
    assert.equal(res.status, 200, await res.text());
  }

  await t.goto(url);
  await t.getByRole('button', { name: 'Close it now and publish the results' }).click();
  await t.waitForURL(/done=closed$/);
  const table = t.getByRole('region', { name: 'Results: Should the counts be open?' });
  const rows = await table.getByRole('row').allInnerTexts();
  // Ten yes, one no, two not sure: the two small counts are hidden, and the
  // ten shown (3 left for two hidden counts: 1 and 2, or 2 and 1).
  assert.match(rows.find(x => x.startsWith('Yes')), /Yes\s+10$/);
  assert.match(rows.find(x => x.startsWith('No')), /No\s+not shown$/);
  assert.match(rows.find(x => x.startsWith('Not sure')), /Not sure\s+not shown$/);
  assert.match(await t.locator('main').innerText(), /People who answered: 13\./);
  await assertAccessible(t, 'the results of a closed consultation');

  // The charter in public: the ethics code, the board, every version's changes.
  await t.goto(`${BASE}/charter`);
  assert.match(await t.getByRole('region', { name: /Our digital ethics code/ }).innerText(), /Household readings/);
  assert.match(await t.getByRole('region', { name: 'Trustees table' }).innerText(), /Teresa Trustee\s+2025-01-01 to 2028-12-31/);
  await t.locator('#v2 summary').first().click();
  assert.match(await t.locator('#v2').innerText(), /Added:.*Household readings/);
  await assertAccessible(t, 'the charter');
  await t.context().close();
});

test('the analyst files the outcome report an ended agreement owes, and it appears in the register', async () => {
  const p = await newPage({ width: 1280, height: 900 });
  await signIn(p, 'analyst');
  await p.goto(`${BASE}/register`);
  const row = p.getByRole('region', { name: 'Agreements table' }).getByRole('row', { name: /barcelona-deaths/ });
  await row.getByRole('link').first().click();
  await p.waitForURL(/\/agreements\/dsa-/);
  const outcome = p.getByRole('region', { name: 'Outcome' });
  assert.match(await outcome.innerText(), /The final report .* is due by/);
  await assertAccessible(p, 'an agreement owing its outcome report');
  await outcome.getByRole('link', { name: 'Report the outcome' }).click();
  await assertAccessible(p, 'the outcome report form');
  // Forgetting the ratings is named, and what was typed is kept.
  await p.getByLabel('What was done with the data').fill('Mapped mortality by district beside NO2 levels for the public-health atlas.');
  await p.getByRole('button', { name: 'File the report' }).click();
  assert.match(await p.getByRole('alert').innerText(), /not filed/);
  assert.equal(await p.getByLabel('What was done with the data').inputValue(), 'Mapped mortality by district beside NO2 levels for the public-health atlas.');
  await assertAccessible(p, 'the outcome report form with errors');
  for (const [group, value] of [['How well did the data', '4'], ['What difference', '3'], ['How much effort', '2'], ['How much risk', '1']]) {
    await p.getByRole('group', { name: new RegExp(group) }).getByRole('radio', { name: value }).check();
  }
  await p.getByLabel('Who benefited, and how').fill('Residents of the two districts with the highest NO2, now on the clean-air plan.');
  await p.getByRole('button', { name: 'File the report' }).click();
  await p.waitForURL(/\/agreements\/dsa-[^/]+#outcomes$/);
  assert.match(await p.getByRole('region', { name: 'Outcome' }).innerText(), /final report[\s\S]*Effectiveness\s*4 of 5/);
  await p.goto(`${BASE}/register`);
  assert.match(await p.getByRole('region', { name: 'Outcome reports table' }).innerText(), /Mapped mortality by district/);
  assert.match(await p.getByRole('region', { name: 'Outcomes by purpose table' }).innerText(), /research\s+2/);
  await assertAccessible(p, 'the register with outcomes');
  await p.context().close();
});

test('the sharing projects are public and the demo project waits in Share', async () => {
  const p = await newPage({ width: 1280, height: 900 });
  await p.goto(`${BASE}/projects`);
  await assertAccessible(p, 'the sharing projects');
  await p.getByRole('link', { name: 'Retrofit priorities from building energy' }).click();
  assert.match(await p.locator('main').innerText(), /Share · version 1/);
  assert.match(await p.getByRole('region', { name: 'Sign-offs' }).innerText(), /Discover signed off by trustees[\s\S]*Prepare signed off by trustees/);
  await assertAccessible(p, 'a sharing project, anonymous');
  await p.context().close();
  const t = await newPage({ width: 1280, height: 900 });
  await signIn(t, 'trustee1');
  await t.goto(`${BASE}/projects`);
  await t.getByRole('link', { name: 'Retrofit priorities from building energy' }).click();
  // Share's checklist: the request is not made yet, so the stage cannot be signed off.
  assert.match(await t.getByRole('region', { name: /checklist/ }).innerText(), /the access request, made/);
  await assertAccessible(t, 'a sharing project, as a trustee');
  await t.context().close();
});

test('the project\'s lead fills it in through the page without JavaScript, and makes its access request', async () => {
  const a = await newPage({ width: 1280, height: 900 });
  await signIn(a, 'analyst');
  await a.goto(`${BASE}/projects`);
  await a.getByRole('link', { name: 'Retrofit priorities from building energy' }).click();
  const url = a.url();
  await a.getByText('Discover: reasons, team').click();
  await assertAccessible(a, 'a sharing project with its forms');
  // A change to Discover is kept (the stage moved on; the form still saves).
  await a.getByLabel('User needs').fill('Tenants of the least efficient buildings pay the most, and say so.');
  await a.getByRole('button', { name: 'Save Discover' }).click();
  await a.waitForURL(/done=saved$/);
  assert.match(await a.locator('main').innerText(), /say so\./);
  // A document through the page's form (a plain file input, no script).
  await a.getByLabel('Kind').selectOption('data_sharing_agreement');
  await a.getByLabel('The file', { exact: true }).setInputFiles({ name: 'dsa.txt', mimeType: 'text/plain', buffer: Buffer.from('Data sharing agreement (demo).') });
  await a.getByRole('button', { name: 'Add the document' }).click();
  await a.waitForURL(/done=kept$/);
  assert.ok(await a.getByRole('region', { name: 'Project documents table' }).getByRole('link', { name: 'dsa.txt' }).isVisible());
  // Share: the request goes to the trustees like any other.
  await a.getByRole('button', { name: 'Make the access request' }).click();
  await a.waitForURL(/done=shared$/);
  assert.match(await a.getByRole('region', { name: /checklist/ }).innerText(), /the trustees' approval of every access request/);
  await assertAccessible(a, 'a sharing project after its request');
  await a.context().close();
  assert.ok(url.includes('/projects/prj-'));
});

test('an administrator registers a catalogue to harvest, and its entries are found under their source', async () => {
  const admin = await newPage({ width: 1280, height: 900 });
  await signIn(admin, 'admin');
  await admin.goto(`${BASE}/admin`);
  const form = admin.locator('form', { has: admin.getByRole('heading', { name: 'Register a catalogue' }) });
  await form.getByLabel('Identifier').fill('mirror');
  await form.getByLabel('Name shown as the source').fill('A mirror of this trust');
  await form.getByLabel('Kind').selectOption('dcat');
  await form.getByLabel('URL', { exact: true }).fill(`${BASE}/catalog.ttl`);
  await form.getByLabel('Harvest every (hours)').fill('12');
  await form.getByRole('button', { name: 'Register and harvest' }).click();
  await admin.waitForURL(`${BASE}/admin?done=catalogue`);
  const table = admin.getByRole('region', { name: 'Remote catalogues table' });
  assert.match(await table.innerText(), /A mirror of this trust[\s\S]*Succeeded[\s\S]*added, 0 updated/);
  await assertAccessible(admin, 'the admin page with a remote catalogue');

  // Anyone searching finds the harvested entries below the city's own, and under their source.
  const p = await newPage({ width: 1280, height: 900 });
  await p.goto(`${BASE}/datasets?q=energy`);
  assert.match(await p.getByRole('heading', { name: /more in other catalogues/ }).innerText(), /\d+ more in other catalogues/);
  await p.getByRole('link', { name: /A mirror of this trust/ }).first().click();
  assert.match(await p.getByRole('heading', { level: 2, name: /from another catalogue/ }).innerText(), /\d+ datasets? from another catalogue/);
  await assertAccessible(p, 'search under a remote source');
  await p.locator('.card-federated h3 a').first().click();
  assert.match(await p.locator('main').innerText(), /cannot be changed here/);
  await assertAccessible(p, 'a federated entry');
  await p.context().close();

  // Removing it takes its entries away.
  await admin.getByRole('button', { name: 'Remove A mirror of this trust' }).click();
  await admin.waitForURL(`${BASE}/admin?done=removed`);
  await admin.goto(`${BASE}/datasets?q=energy`);
  assert.equal(await admin.getByRole('heading', { name: /more in other catalogues/ }).count(), 0);
  await admin.context().close();
});

test('the live air-quality stream shows Barcelona\'s stations changing, with their history, to anyone', async () => {
  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${BASE}/datasets/barcelona-air-quality-live`);
  await page.getByRole('link', { name: /see its latest values/ }).click();
  await page.waitForURL(`${BASE}/datasets/barcelona-air-quality-live/live`);
  const table = page.locator('#latest-values');
  // Eight stations of the city's network, at their real places on the map.
  assert.equal(await table.locator('tbody tr').count(), 8);
  assert.ok(await page.getByRole('img', { name: 'Where each entity is' }).isVisible());
  assert.equal(await page.locator('svg.stream-map circle').count(), 8);
  assert.ok(await table.getByRole('rowheader', { name: 'Barcelona - Eixample' }).isVisible());
  // Each shown read is logged, and the page says where.
  assert.match(await table.locator('caption').innerText(), /entry \d+/);
  // A chart of recent history per pollutant, with its figures as a table.
  assert.ok(await page.getByRole('img', { name: /^NO2, the last \d+ readings/ }).isVisible());
  await assertAccessible(page, 'stream page');
  // The replay moves on: an hour of readings every five seconds.
  const before = await table.locator('tbody tr').first().locator('td').last().innerText();
  let after = before;
  for (let i = 0; i < 20 && after === before; i++) {
    await new Promise(r => setTimeout(r, 1000));
    await page.reload();
    after = await page.locator('#latest-values tbody tr').first().locator('td').last().innerText();
  }
  assert.notEqual(after, before, 'the latest values did not change');
  // Another station's history.
  await page.getByRole('link', { name: 'Barcelona - Sants' }).click();
  assert.ok(await page.getByRole('heading', { name: 'Recent history of Barcelona - Sants' }).isVisible());
  await assertAccessible(page, 'stream page, one station');
  await page.context().close();
});
