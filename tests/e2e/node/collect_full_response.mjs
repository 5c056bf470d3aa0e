import OpenAI from "openai";
const client = new OpenAI();
const stream = await client.chat.completions.create({
  model: "Llama-3.3-70B-Instruct",
  messages: [{ role: "user", content: "List 5 EU countries" }],
  stream: true,
});
const chunks = [];
for await (const chunk of stream) {
  const content = chunk.choices[0]?.delta?.content;
  if (content) {
    chunks.push(content);
    process.stdout.write(content);
  }
}
const completeText = chunks.join("");
console.log(`\n\nTotal length: ${completeText.length} characters`);
