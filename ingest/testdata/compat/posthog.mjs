// Sends events with the real posthog-node, pointed at Pulse.
// Usage: node posthog.mjs HOST API_KEY N BASE_MS
// Event i: i%3 != 2 a capture of "Order Completed" by distinct_id
// ph-user-(i%5) with uuid ...-i and timestamp BASE_MS + i minutes; i%3 == 2
// an identify of ph-id-i, once ph-anon-i, with $set plan.
import { PostHog } from 'posthog-node'

const [host, apiKey, n, base] = process.argv.slice(2)
const client = new PostHog(apiKey, { host, flushAt: 1000, flushInterval: 600000, fetchRetryCount: 0, preloadFeatureFlags: false })
client.on('error', (err) => { console.error('posthog error', err); process.exitCode = 1 })
for (let i = 0; i < Number(n); i++) {
  if (i % 3 === 2) {
    client.identify({ distinctId: `ph-id-${i}`, properties: { plan: 'pro', $anon_distinct_id: `ph-anon-${i}` } })
  } else {
    client.capture({ distinctId: `ph-user-${i % 5}`, event: 'Order Completed', properties: { revenue: i, order_id: `o-${i}` },
      timestamp: new Date(Number(base) + i * 60000), uuid: uuidOf(i) })
  }
}
await client.shutdown(20000)
console.log(JSON.stringify(Number(n)))

function uuidOf(i) { return `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` }
// The client keeps a keep-alive socket and timers: nothing is left to send.
process.exit(process.exitCode ?? 0)
