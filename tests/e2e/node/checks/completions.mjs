// Text completions, scoring, chat logprobs and the request id with the Node SDK; prints what it
// got as JSON.
import OpenAI from "openai";
const client = new OpenAI();
const model = "gpt-4.1";
const prompt = "The three primary colours are";

const whole = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0 });
let streamed = "";
let usage = null;
const stream = await client.completions.create({
  model, prompt, max_tokens: 8, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  for (const choice of chunk.choices) streamed += choice.text;
  if (chunk.usage) usage = chunk.usage;
}
const scored = await client.completions.create({
  model, prompt, echo: true, logprobs: 2, max_tokens: 0,
});
const chat = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Name a colour." }], max_tokens: 6,
  temperature: 0, logprobs: true, top_logprobs: 2, n: 2,
});
console.log(JSON.stringify({
  whole: whole.choices[0].text,
  streamed,
  streamed_tokens: usage?.completion_tokens,
  scored: scored.choices[0].logprobs,
  scored_text: scored.choices[0].text,
  chat_request_id: chat._request_id,
  chat_choices: chat.choices.map((c) => ({
    index: c.index,
    content: c.message.content,
    tokens: c.logprobs.content.map((entry) => entry.token),
  })),
}));
