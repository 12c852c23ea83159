// The built package, loaded by a CommonJS app (require of an ES module, Node >= 20.19).
const assert = require('node:assert/strict');
const pkg = require('nestjs-web-pubsub');

assert.equal(typeof pkg.WebPubSubModule, 'function');
assert.equal(typeof pkg.WebPubSubModule.forRoot, 'function');
assert.equal(typeof pkg.WebPubSubModule.forRootAsync, 'function');
console.log('require: ok');
