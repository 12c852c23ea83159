/**
 * The sample in a real browser: two people chat through the embedded emulator. Needs Chromium
 * (Debian's `chromium` package; CHROMIUM_PATH overrides the path). Screenshots of a failing run
 * are kept in test-results/.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { startSample, type RunningSample } from '../sample/main.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = 'test-results';

describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)('sample chat in Chromium', () => {
  let sample: RunningSample;
  let browser: Browser;
  const pages: Page[] = [];

  beforeAll(async () => {
    sample = await startSample({ port: 0, host: '127.0.0.1', logger: false });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await sample?.close();
  });

  const open = async () => {
    const page = await browser.newPage();
    pages.push(page);
    await page.goto(sample.url);
    return page;
  };

  const signIn = async (page: Page, name: string) => {
    await page.fill('#name', name);
    await page.click('#sign-in button');
  };

  const keepScreenshots = (name: string) =>
    onTestFailed(async () => {
      mkdirSync(ARTIFACTS, { recursive: true });
      await Promise.all(
        pages.flatMap((page, i) =>
          page.isClosed()
            ? []
            : [page.screenshot({ path: `${ARTIFACTS}/${name}-page${i + 1}.png`, fullPage: true })],
        ),
      );
    });

  it('lets two people sign in, see each other, chat, type and leave', async () => {
    keepScreenshots('chat');
    const ada = await open();
    await signIn(ada, 'ada');
    await expect.poll(() => ada.textContent('#status')).toBe('Signed in as ada');

    const bob = await open();
    await signIn(bob, 'bob');
    await expect.poll(() => bob.textContent('#status')).toBe('Signed in as bob');

    // presence, both ways
    await expect.poll(() => ada.textContent('#users')).toContain('bob');
    await expect.poll(() => bob.textContent('#users')).toContain('ada');

    await ada.fill('#text', 'hello from ada');
    await ada.click('#send button');
    await expect.poll(() => bob.textContent('#messages')).toContain('adahello from ada');
    await expect.poll(() => ada.textContent('#messages')).toContain('adahello from ada');

    await bob.type('#text', 'typ');
    await expect.poll(() => ada.textContent('#typing')).toBe('bob is typing…');
    await bob.fill('#text', 'hi ada');
    await bob.click('#send button');
    await expect.poll(() => ada.textContent('#messages')).toContain('bobhi ada');

    // a room of their own
    for (const page of [ada, bob]) {
      await page.fill('#room-name', 'nest');
      await page.click('#join button');
      await expect.poll(() => page.textContent('#room-title')).toBe('#nest');
    }
    await bob.fill('#text', 'in the nest');
    await bob.click('#send button');
    await expect.poll(() => ada.textContent('#messages')).toContain('bobin the nest');

    await bob.close();
    await expect.poll(() => ada.textContent('#users')).not.toContain('bob');
  });

  it('shows why a sign-in is refused: a taken name, an empty one', async () => {
    keepScreenshots('refused');
    const first = await open();
    await signIn(first, 'carol');
    await expect.poll(() => first.textContent('#status')).toBe('Signed in as carol');

    const second = await open();
    await signIn(second, 'carol');
    await expect
      .poll(() => second.textContent('#sign-in-error'))
      .toBe('The name "carol" is taken.');
    await signIn(second, '   ');
    await expect.poll(() => second.textContent('#sign-in-error')).toBe('Please enter a name.');
    expect(await second.isVisible('#chat')).toBe(false);
  });
});
