// The built package, imported by its name as an ESM app would.
import assert from 'node:assert/strict';
import * as pkg from 'nestjs-web-pubsub';

for (const name of [
  'WebPubSubModule',
  'WebPubSubHub',
  'OnConnect',
  'OnUserEvent',
  'EventData',
  'EventContext',
  'InjectHub',
  'WebPubSubReply',
  'isWebPubSubContext',
]) {
  assert.equal(typeof pkg[name], 'function', `${name} is exported`);
}
assert.equal(
  pkg.computeSignature('ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH', 'conn1'),
  'sha256=8de7281e588e23b0a30a7180ffa240257b8176e983004c240c9f3f7a7233c993',
);
console.log('import: ok');

const testing = await import('nestjs-web-pubsub/testing');
assert.equal(typeof testing.WebPubSubTestClient, 'function');
assert.equal(typeof testing.createEventHeaders, 'function');
console.log('import nestjs-web-pubsub/testing: ok');
