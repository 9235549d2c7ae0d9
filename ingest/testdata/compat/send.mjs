// Sends events with the real @segment/analytics-node, pointed at Pulse.
// Usage: node send.mjs HOST WRITE_KEY N
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, n] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushAt: 15, flushInterval: 200, maxRetries: 3 })
analytics.on('error', (err) => { console.error('analytics error', err); process.exitCode = 1 })
const ids = []
for (let i = 0; i < Number(n); i++) {
  const userId = `node-${i % 7}`
  const messageId = `node-msg-${i}`
  ids.push(messageId)
  switch (i % 4) {
    case 0: analytics.track({ userId, messageId, event: 'Order Completed', properties: { revenue: i, order_id: `o-${i}` } }); break
    case 1: analytics.identify({ userId, messageId, traits: { country: 'FR', plan: 'pro' } }); break
    case 2: analytics.page({ anonymousId: `anon-${i}`, messageId, name: 'Pricing', properties: { path: '/pricing' } }); break
    case 3: analytics.screen({ userId, messageId, name: 'Home' }); break
  }
}
await analytics.closeAndFlush({ timeout: 20000 })
console.log(JSON.stringify(ids))
